// /v1/models: base models (folders in the models dir) and the project's ft: models and
// checkpoints. Only fine-tuned models can be deleted; a deleted one cannot be trained on.
import type { BaseModels } from "../../jobs/base-models.js";
import * as jobs from "../../jobs/repo.js";
import type { Db } from "../../storage/db.js";
import { ApiError } from "../errors.js";
import { orgId } from "../fine-tuning/schema.js";

export interface ModelObject {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
}

const notFound = ApiError.noSuchModel;

export class ModelsService {
  constructor(private readonly deps: { db: Db; baseModels: BaseModels; onDeleted?: (id: string) => Promise<void> }) {}

  async list(projectId: string) {
    const base = (await this.deps.baseModels.list()).map((m): ModelObject => ({ id: m.id, object: "model", created: m.created, owned_by: "system" }));
    const tuned = (await jobs.listModels(this.deps.db, projectId)).map(
      (m): ModelObject => ({ id: m.id, object: "model", created: m.createdAt, owned_by: orgId(m.projectId) }),
    );
    return { object: "list" as const, data: [...base, ...tuned] };
  }

  async retrieve(projectId: string, id: string): Promise<ModelObject> {
    if (id.startsWith("ft:")) {
      const m = await jobs.getModel(this.deps.db, projectId, id);
      if (!m) throw notFound(id);
      return { id: m.id, object: "model", created: m.createdAt, owned_by: orgId(m.projectId) };
    }
    const base = await this.deps.baseModels.get(id);
    if (!base) throw notFound(id);
    return { id: base.id, object: "model", created: base.created, owned_by: "system" };
  }

  async delete(projectId: string, id: string) {
    if (!id.startsWith("ft:")) {
      if (await this.deps.baseModels.get(id)) {
        throw ApiError.of("model_not_deletable", `The model '${id}' is a base model; only fine-tuned models can be deleted.`, "model");
      }
      throw notFound(id);
    }
    if (!(await jobs.deleteModel(this.deps.db, projectId, id))) throw notFound(id);
    // It stops serving at once: running completions on it end, its adapter is unloaded.
    await this.deps.onDeleted?.(id);
    return { id, object: "model" as const, deleted: true as const };
  }
}
