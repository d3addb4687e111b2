// HTTP for /v1/fine_tuning/checkpoints/{checkpoint}/permissions: admin keys only (see
// plugins/auth.ts); the logic is in service.ts.
import type { FastifyInstance } from "fastify";
import { zodToApiError } from "../plugins/errors.js";
import { checkpointParams, createPermissionsBody, listPermissionsQuery, permissionParams } from "./schema.js";
import type { CheckpointPermissionsService } from "./service.js";

function parse<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import("zod").ZodError } }, value: unknown): T {
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw zodToApiError(r.error);
  return r.data;
}

const PATH = "/v1/fine_tuning/checkpoints/:fine_tuned_model_checkpoint/permissions";
const admin = { config: { admin: true } };

export function registerCheckpointPermissionRoutes(app: FastifyInstance, svc: CheckpointPermissionsService): void {
  app.post(PATH, admin, async (request) =>
    svc.create(parse(checkpointParams, request.params).fine_tuned_model_checkpoint, parse(createPermissionsBody, request.body).project_ids),
  );

  app.get(PATH, admin, async (request) =>
    svc.list(parse(checkpointParams, request.params).fine_tuned_model_checkpoint, parse(listPermissionsQuery, request.query)),
  );

  app.delete(`${PATH}/:permission_id`, admin, async (request) => {
    const p = parse(permissionParams, request.params);
    return svc.delete(p.fine_tuned_model_checkpoint, p.permission_id);
  });
}
