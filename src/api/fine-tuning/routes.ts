// HTTP for /v1/fine_tuning/jobs: parsing and wire shapes only; the logic is in service.ts.
import type { FastifyInstance, FastifyRequest } from "fastify";
import { ApiError } from "../errors.js";
import { zodToApiError } from "../plugins/errors.js";
import { createJobBody, jobIdParams, listCheckpointsQuery, listEventsQuery, listJobsQuery } from "./schema.js";
import type { FineTuningService } from "./service.js";

function parseOr400<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import("zod").ZodError } }, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw zodToApiError(r.error);
  return r.data;
}

/** `metadata[k]=v` (deepObject, as both SDKs send it) or `metadata=null` (jobs without metadata). */
function metadataFilter(query: Record<string, unknown>): Record<string, string> | null | undefined {
  if (query.metadata !== undefined && query.metadata !== "null") throw ApiError.badRequest("metadata must be `null` or given as metadata[KEY]=VALUE.", "metadata", "invalid_value");
  if (query.metadata === "null") return null;
  let out: Record<string, string> | undefined;
  for (const [k, v] of Object.entries(query)) {
    const m = /^metadata\[(.+)\]$/s.exec(k);
    if (!m) continue;
    if (typeof v !== "string") throw ApiError.badRequest(`metadata[${m[1]}] must be given once.`, "metadata");
    (out ??= {})[m[1]!] = v;
  }
  return out;
}

const jobId = (request: FastifyRequest) => parseOr400(jobIdParams, request.params).fine_tuning_job_id;

export function registerFineTuningRoutes(app: FastifyInstance, svc: FineTuningService): void {
  app.post("/v1/fine_tuning/jobs", async (request) => {
    if (request.body === undefined || request.body === null || typeof request.body !== "object") {
      throw ApiError.badRequest("The request body must be a JSON object.", null);
    }
    const body = parseOr400(createJobBody, request.body);
    const retry = Number(request.headers["x-stainless-retry-count"] ?? "0") > 0;
    return svc.create(request.project.id, body, retry);
  });

  app.get("/v1/fine_tuning/jobs", async (request) => {
    const query = (request.query ?? {}) as Record<string, unknown>;
    const q = parseOr400(listJobsQuery, Object.fromEntries(Object.entries(query).filter(([k]) => !/^metadata(\[.+\])?$/s.test(k))));
    return svc.list(request.project.id, { ...q, metadata: metadataFilter(query) });
  });

  app.get("/v1/fine_tuning/jobs/:fine_tuning_job_id", async (request) => svc.retrieve(request.project.id, jobId(request)));

  for (const action of ["cancel", "pause", "resume"] as const) {
    app.post(`/v1/fine_tuning/jobs/:fine_tuning_job_id/${action}`, async (request) =>
      svc.act(request.project.id, jobId(request), action),
    );
  }

  app.get("/v1/fine_tuning/jobs/:fine_tuning_job_id/events", async (request) =>
    svc.events(request.project.id, jobId(request), parseOr400(listEventsQuery, request.query)),
  );

  app.get("/v1/fine_tuning/jobs/:fine_tuning_job_id/checkpoints", async (request) =>
    svc.checkpoints(request.project.id, jobId(request), parseOr400(listCheckpointsQuery, request.query)),
  );
}
