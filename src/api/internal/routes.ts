// HTTP for the worker protocol (/internal/v1): what engine workers call, with worker tokens.
import { Readable } from "node:stream";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { ApiError } from "../errors.js";
import { zodToApiError } from "../plugins/errors.js";
import {
  blobParams,
  checkpointBody,
  claimBody,
  completeBody,
  eventsBody,
  failBody,
  heartbeatBody,
  inputParams,
  jobParams,
  registerBody,
  sourceParams,
} from "../../protocol/worker.js";
import type { InternalService } from "./service.js";

type Schema<T> = { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import("zod").ZodError } };
function parse<T>(schema: Schema<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw zodToApiError(r.error);
  return r.data;
}

const progressOf = (p: { step: number; total_steps: number; steps_per_second: number } | undefined) =>
  p && { step: p.step, totalSteps: p.total_steps, stepsPerSecond: p.steps_per_second };

export function registerInternalRoutes(app: FastifyInstance, svc: InternalService): void {
  const P = "/internal/v1";
  const jobId = (r: FastifyRequest) => parse(jobParams, r.params).job_id;

  app.register(async (scope) => {
    // Artifact uploads stream straight into the blob store: no body parsing.
    scope.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));

    scope.post(`${P}/register`, async (r) => {
      parse(registerBody, r.body);
      return svc.register(r.worker);
    });

    scope.post(`${P}/claim`, async (r, reply) => {
      const { wait_seconds } = parse(claimBody, r.body);
      // The request itself is finished once its body is read; the socket tells whether the
      // worker is still waiting for the answer.
      const spec = await svc.claim(r.worker, wait_seconds, () => r.raw.socket?.destroyed === true);
      if (!spec) return reply.code(204).send();
      return spec;
    });

    scope.post(`${P}/jobs/:job_id/heartbeat`, async (r) =>
      svc.heartbeat(r.worker, jobId(r), progressOf(parse(heartbeatBody, r.body)?.progress)),
    );

    scope.post(`${P}/jobs/:job_id/events`, async (r) => {
      const body = parse(eventsBody, r.body);
      return svc.events(r.worker, jobId(r), body.events, progressOf(body.progress));
    });

    scope.get(`${P}/jobs/:job_id/inputs/:input`, async (r, reply) => {
      const p = parse(inputParams, r.params);
      return reply.type("application/octet-stream").send(await svc.input(r.worker, p.job_id, p.input));
    });

    scope.get(`${P}/jobs/:job_id/sources/:source/:file`, async (r, reply) => {
      const p = parse(sourceParams, r.params);
      return reply.type("application/octet-stream").send(await svc.source(r.worker, p.job_id, p.source, p.file));
    });

    scope.put(`${P}/jobs/:job_id/artifacts/:kind/:step/:file`, async (r) => {
      const p = parse(blobParams, r.params);
      if (!(r.body instanceof Readable)) throw ApiError.badRequest("Send the artifact as application/octet-stream.", "content-type");
      return svc.putArtifact(r.worker, p.job_id, p.kind, Number(p.step), p.file, r.body);
    });

    scope.post(`${P}/jobs/:job_id/checkpoints`, async (r) => svc.checkpoint(r.worker, jobId(r), parse(checkpointBody, r.body)));

    scope.post(`${P}/jobs/:job_id/complete`, async (r) => {
      const b = parse(completeBody, r.body);
      return svc.complete(r.worker, jobId(r), { trainedTokens: b.trained_tokens, files: b.files });
    });

    scope.post(`${P}/jobs/:job_id/fail`, async (r) => svc.fail(r.worker, jobId(r), parse(failBody, r.body)));

    scope.post(`${P}/jobs/:job_id/release`, async (r) => svc.release(r.worker, jobId(r)));
  });
}
