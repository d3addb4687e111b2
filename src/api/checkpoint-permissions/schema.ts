// Wire shapes of checkpoint permissions (OpenAI's names) and their serializer.
import { z } from "zod";
import type { PermissionRow } from "../../jobs/permissions.js";

export const checkpointParams = z.object({ fine_tuned_model_checkpoint: z.string().min(1) });
export const permissionParams = checkpointParams.extend({ permission_id: z.string().min(1) });

export const createPermissionsBody = z.object({ project_ids: z.array(z.string().min(1)).min(1).max(100) }).strict();

export const listPermissionsQuery = z.object({
  project_id: z.string().min(1).optional(),
  after: z.string().min(1).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(10),
  order: z.enum(["ascending", "descending"]).default("descending"),
});
export type ListPermissionsQuery = z.infer<typeof listPermissionsQuery>;

export function toPermissionObject(row: PermissionRow) {
  return { id: row.id, object: "checkpoint.permission" as const, created_at: row.createdAt, project_id: row.projectId };
}
