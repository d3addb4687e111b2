// Liveness and readiness. /readyz answers 200 only when the database and blob store answer.
import type { FastifyInstance } from "fastify";

export interface ReadinessProbe {
  (): Promise<void>;
}

export function registerHealthRoutes(app: FastifyInstance, ready: ReadinessProbe): void {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (request, reply) => {
    try {
      await ready();
      return { status: "ready" };
    } catch (err) {
      request.log.warn({ err }, "not ready");
      return reply.code(503).header("retry-after", "1").send({ status: "not_ready" });
    }
  });
}
