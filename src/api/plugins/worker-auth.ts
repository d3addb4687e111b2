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

// Workers call many times a second; a token seen in the last minute is not looked up again.
const CACHE_MS = 60_000;

export function registerWorkerAuth(app: FastifyInstance, db: Db): void {
  const cache = new Map<string, { worker: Worker; until: number }>();
  const lookup = async (token: string): Promise<Worker | undefined> => {
    const hit = cache.get(token);
    if (hit && hit.until > Date.now()) return hit.worker;
    const worker = await findWorkerByToken(db, token);
    if (worker) {
      if (cache.size > 10_000) cache.clear();
      cache.set(token, { worker, until: Date.now() + CACHE_MS });
    }
    return worker;
  };
  app.decorateRequest("worker", null as unknown as Worker);
  app.addHook("onRequest", async (request) => {
    const route = request.routeOptions.url;
    if (route === undefined || !route.startsWith("/internal/")) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.authorization ?? "");
    const worker = m ? await lookup(m[1]!) : undefined;
    if (!worker) throw ApiError.unauthorized("A valid worker token is required for the worker protocol.");
    request.worker = worker;
  });
}
