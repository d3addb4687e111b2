// buildApp assembles the HTTP API from its dependencies and never listens: tests inject(),
// main.ts listens.
import multipart from "@fastify/multipart";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { newId } from "../ids.js";
import type { BlobStore, Db } from "../storage/index.js";
import type { Project } from "../storage/repos/projects.js";
import { registerFileRoutes } from "./files/routes.js";
import { FilesService } from "./files/service.js";
import { registerHealthRoutes, type ReadinessProbe } from "./health/routes.js";
import { registerAuth } from "./plugins/auth.js";
import { registerErrorHandling } from "./plugins/errors.js";

export interface AppDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly apiKey: string | undefined;
  readonly defaultProject: Project;
  readonly maxUploadBytes: number;
  readonly uploadLeaseMs: number;
  readonly ready: ReadinessProbe;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    genReqId: () => newId.request(),
    bodyLimit: 16 * 1024 * 1024,
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
  });

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });

  // The Python SDK sends `Content-Type: application/json` with an empty body on body-less
  // POST/DELETE (cancel, delete): that is no body, not bad JSON.
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text.trim() === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      const e = err as Error & { statusCode?: number; code?: string };
      e.statusCode = 400;
      e.code = "FST_ERR_CTP_INVALID_JSON_BODY";
      done(e, undefined);
    }
  });

  registerErrorHandling(app);
  await app.register(multipart, {
    throwFileSizeLimit: false,
    limits: { fileSize: deps.maxUploadBytes, files: 1, fields: 16, fieldSize: 1024 * 1024, parts: 20 },
  });
  registerAuth(app, { db: deps.db, envKey: deps.apiKey, defaultProject: deps.defaultProject });
  registerHealthRoutes(app, deps.ready);

  const files = new FilesService({
    db: deps.db,
    blobs: deps.blobs,
    log: deps.log,
    maxUploadBytes: deps.maxUploadBytes,
    uploadLeaseMs: deps.uploadLeaseMs,
  });
  registerFileRoutes(app, files);
  return app;
}
