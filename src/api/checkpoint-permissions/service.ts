// Checkpoint permissions, free of HTTP: an admin grants projects a fine-tuned model or checkpoint
// of another project, lists the grants and revokes them. What a grant allows (training from the
// model, chatting with it) is enforced where models are looked up (jobs/repo.ts getModel).
import { nowSeconds } from "../../ids.js";
import * as perms from "../../jobs/permissions.js";
import type { Db } from "../../storage/db.js";
import { findProject } from "../../storage/repos/projects.js";
import { ApiError } from "../errors.js";
import { toPermissionObject, type ListPermissionsQuery } from "./schema.js";

function page(rows: perms.PermissionRow[], limit: number) {
  const data = rows.slice(0, limit).map(toPermissionObject);
  return { object: "list" as const, data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: rows.length > limit };
}

export class CheckpointPermissionsService {
  constructor(private readonly deps: { readonly db: Db }) {}

  private async mustGetModel(id: string) {
    const model = await perms.getAnyModel(this.deps.db, id);
    if (!model) throw ApiError.notFound(`The fine-tuned model checkpoint '${id}' does not exist.`, "fine_tuned_model_checkpoint", "model_not_found");
    return model;
  }

  async create(modelId: string, projectRefs: readonly string[]) {
    const model = await this.mustGetModel(modelId);
    const ids: string[] = [];
    for (const [i, ref] of projectRefs.entries()) {
      const project = await findProject(this.deps.db, ref);
      if (!project) throw ApiError.badRequest(`No such project: ${ref}`, `project_ids[${i}]`, "invalid_value");
      if (project.id === model.projectId) {
        throw ApiError.badRequest(`Project ${ref} owns ${modelId} already.`, `project_ids[${i}]`, "invalid_value");
      }
      ids.push(project.id);
    }
    const rows = await perms.grant(this.deps.db, modelId, [...new Set(ids)], nowSeconds());
    return page(rows, rows.length);
  }

  async list(modelId: string, q: ListPermissionsQuery) {
    await this.mustGetModel(modelId);
    let afterSeq: number | undefined;
    if (q.after !== undefined) {
      afterSeq = await perms.getPermissionSeq(this.deps.db, modelId, q.after);
      if (afterSeq === undefined) throw ApiError.badRequest(`No such permission: ${q.after}`, "after");
    }
    const projectId = q.project_id === undefined ? undefined : ((await findProject(this.deps.db, q.project_id))?.id ?? q.project_id);
    return page(await perms.listPermissions(this.deps.db, modelId, { projectId, afterSeq, limit: q.limit, order: q.order }), q.limit);
  }

  async delete(modelId: string, permissionId: string) {
    await this.mustGetModel(modelId);
    if (!(await perms.revoke(this.deps.db, modelId, permissionId))) {
      throw ApiError.notFound(`No such permission: ${permissionId}`, "permission_id");
    }
    return { id: permissionId, object: "checkpoint.permission" as const, deleted: true as const };
  }
}
