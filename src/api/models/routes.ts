// HTTP for /v1/models. Ids arrive with raw or %3A-escaped colons (ft: names); the router
// decodes both to the same id.
import type { FastifyInstance, FastifyRequest } from "fastify";
import { z } from "zod";
import type { ModelsService } from "./service.js";

const params = z.object({ model: z.string().min(1) });
const modelId = (r: FastifyRequest) => params.parse(r.params).model;

export function registerModelRoutes(app: FastifyInstance, svc: ModelsService): void {
  app.get("/v1/models", async (r) => svc.list(r.project.id));
  app.get("/v1/models/:model", async (r) => svc.retrieve(r.project.id, modelId(r)));
  app.delete("/v1/models/:model", async (r) => svc.delete(r.project.id, modelId(r)));
}
