// Worker tokens for the worker protocol (/internal/v1). User API keys are never accepted here,
// and worker tokens never reach /v1.
import type { FastifyInstance } from "fastify";
import type { Db } from "../../storage/db.js";
import { findWorkerByToken, type Worker } from "../../jobs/workers.js";
import { ApiError } from "../errors.js";

declare module "fastify" {
  interface FastifyRequest {
    worker: Worker;
  }
}

export function registerWorkerAuth(app: FastifyInstance, db: Db): void {
  app.decorateRequest("worker", null as unknown as Worker);
  app.addHook("onRequest", async (request) => {
    const route = request.routeOptions.url;
    if (route === undefined || !route.startsWith("/internal/")) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? "");
    const worker = m ? await findWorkerByToken(db, m[1]!) : undefined;
    if (!worker) throw ApiError.unauthorized("A valid worker token is required for the worker protocol.");
    request.worker = worker;
  });
}
