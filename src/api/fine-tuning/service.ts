// The fine-tuning jobs API's logic, free of HTTP: create (with validation of every parameter),
// list, retrieve, cancel, pause, resume, events and checkpoints.
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { newId, nowSeconds } from "../../ids.js";
import type { BaseModels } from "../../jobs/base-models.js";
import { parseFtName } from "../../jobs/names.js";
import { LORA_DEFAULTS } from "../../jobs/validation/validate-file.js";
import * as jobs from "../../jobs/repo.js";
import type { Db } from "../../storage/db.js";
import { getFile } from "../../storage/repos/files.js";
import { ApiError } from "../errors.js";
import {
  methodHyperparameters,
  toCheckpointObject,
  toEventObject,
  toJobObject,
  type CreateJobBody,
  type DpoHyperparameters,
  type Hyperparameters,
  type StoredMethod,
  type WandbIntegration,
} from "./schema.js";

// A retry of the same create within this window returns the first job instead of a second one.
const RETRY_DEDUPE_SECONDS = 600;

export interface FineTuningDeps {
  readonly db: Db;
  readonly log: Logger;
  readonly baseModels: BaseModels;
  /** Called after a job is created, so validation starts at once. */
  readonly onCreated: () => void;
  /** Called when a job goes back to the queue (resume), to wake waiting workers. */
  readonly onQueued: () => void;
  /** Whether the trainer's Python can import wandb (integrations are refused otherwise). */
  readonly wandbAvailable: () => Promise<boolean>;
  /** The largest LoRA rank the serving pool of a base model loads (undefined: any). */
  readonly maxLoraRank?: (base: string) => number | undefined;
}

type Action = "cancel" | "pause" | "resume";

// For each action: the states it applies to, the state it leads to, the states in which a
// repeat (an SDK retry) just returns the job, and the event it writes.
const ACTIONS: Record<Action, { from: string[]; to: string; already: string[]; event: string }> = {
  cancel: { from: ["validating_files", "queued", "running", "paused"], to: "cancelled", already: ["cancelled"], event: "Fine-tuning job cancelled" },
  pause: { from: ["queued", "running"], to: "paused", already: ["paused"], event: "Fine-tuning job paused" },
  resume: { from: ["paused"], to: "queued", already: ["queued", "running"], event: "Fine-tuning job resumed" },
};

function fingerprint(projectId: string, body: CreateJobBody): string {
  return createHash("sha256").update(projectId).update(JSON.stringify(body)).digest("hex");
}

const METHOD_KEYS = ["n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha", "lora_dropout"] as const;

function withDefaults(hp: Hyperparameters): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const key of METHOD_KEYS) out[key] = hp[key] ?? "auto";
  out.quantization = hp.quantization ?? LORA_DEFAULTS.quantization;
  return out;
}

function supervisedMethod(body: CreateJobBody): StoredMethod {
  const fromMethod = body.method?.supervised?.hyperparameters ?? undefined;
  if (fromMethod && body.hyperparameters) {
    throw ApiError.badRequest(
      "Specify hyperparameters either in 'method.supervised.hyperparameters' or in the deprecated 'hyperparameters', not both.",
      "hyperparameters",
    );
  }
  return { type: "supervised", supervised: { hyperparameters: withDefaults(fromMethod ?? body.hyperparameters ?? {}) } };
}

/** DPO takes its hyperparameters only from method.dpo (the top-level object is supervised-only
 *  and deprecated at OpenAI); beta and rpo_alpha stay "auto" until validation resolves them
 *  (validation-runner). */
function dpoMethod(body: CreateJobBody): StoredMethod {
  if (body.hyperparameters) {
    throw ApiError.badRequest("DPO hyperparameters go in 'method.dpo.hyperparameters'; the deprecated 'hyperparameters' applies to supervised jobs only.", "hyperparameters");
  }
  if (body.method?.supervised) {
    throw ApiError.badRequest("'method.supervised' does not apply to a job with method.type 'dpo'.", "method.supervised");
  }
  const hp: DpoHyperparameters = body.method?.dpo?.hyperparameters ?? {};
  return { type: "dpo", dpo: { hyperparameters: { ...withDefaults(hp), beta: hp.beta ?? "auto", rpo_alpha: hp.rpo_alpha ?? "auto" } } };
}

function storedMethod(body: CreateJobBody): StoredMethod {
  const method = body.method;
  if (method?.type === "dpo") return dpoMethod(body);
  if (method?.dpo) throw ApiError.badRequest("'method.dpo' does not apply to a job with method.type 'supervised'.", "method.dpo");
  return supervisedMethod(body);
}

/** The wandb objects as the job echoes them (OpenAI's keys, absent ones null), or a 400 when the
 *  trainer's Python has no wandb package to forward the metrics with. */
function storedIntegrations(body: CreateJobBody, wandbAvailable: boolean): WandbIntegration[] {
  const list = body.integrations ?? [];
  if (list.length > 0 && !wandbAvailable) {
    throw ApiError.badRequest("Integrations (wandb) are not supported by this server: the trainer has no 'wandb' package installed.", "integrations", "unsupported_parameter");
  }
  return list.map((i) => ({ type: "wandb", wandb: { project: i.wandb.project, name: i.wandb.name ?? null, entity: i.wandb.entity ?? null, tags: i.wandb.tags ?? [] } }));
}

export class FineTuningService {
  constructor(private readonly deps: FineTuningDeps) {}

  private async resolveModel(projectId: string, model: string): Promise<{ base: string; parent: string | null }> {
    const notAvailable = () =>
      ApiError.badRequest(`Model ${model} is not available for fine-tuning or does not exist.`, "model", "model_not_available");
    if (model.startsWith("ft:")) {
      if (!parseFtName(model)) throw notAvailable();
      const row = await jobs.getModel(this.deps.db, projectId, model);
      if (!row) throw notAvailable();
      return { base: row.baseModel, parent: model };
    }
    if (!(await this.deps.baseModels.get(model))) {
      const why = await this.deps.baseModels.incomplete(model);
      throw why ? ApiError.badRequest(why, "model", "model_not_available") : notAvailable();
    }
    return { base: model, parent: null };
  }

  /** A fine-tune its base's serving pool could not load is refused now, not after training. */
  private checkRank(base: string, method: StoredMethod, body: CreateJobBody): void {
    const max = this.deps.maxLoraRank?.(base);
    const hp = methodHyperparameters(method);
    const rank = typeof hp.lora_rank === "number" ? hp.lora_rank : LORA_DEFAULTS.lora_rank;
    const param = body.method ? `method.${method.type}.hyperparameters.lora_rank` : "hyperparameters.lora_rank";
    if (max === undefined || rank <= max) return;
    throw ApiError.badRequest(`lora_rank ${rank} is above ${max}, the largest rank the serving pool of '${base}' loads; use a lora_rank of at most ${max}.`, param, "invalid_value");
  }

  private async checkFile(projectId: string, id: string, param: "training_file" | "validation_file"): Promise<void> {
    const file = await getFile(this.deps.db, projectId, id, nowSeconds());
    if (!file) throw ApiError.badRequest(`invalid ${param}: ${id}`, param, "invalid_file");
    if (file.purpose !== "fine-tune") {
      throw ApiError.badRequest(`invalid ${param}: ${id} has purpose '${file.purpose}'; upload it with purpose 'fine-tune'.`, param, "invalid_file");
    }
  }

  async create(projectId: string, body: CreateJobBody, isRetry: boolean) {
    const { db } = this.deps;
    const print = fingerprint(projectId, body);
    if (isRetry) {
      const earlier = await jobs.findJobByFingerprint(db, projectId, print, nowSeconds() - RETRY_DEDUPE_SECONDS);
      if (earlier) return toJobObject(earlier);
    }
    const method = storedMethod(body);
    const integrations = storedIntegrations(body, (body.integrations ?? []).length === 0 || (await this.deps.wandbAvailable()));
    const { base, parent } = await this.resolveModel(projectId, body.model);
    this.checkRank(base, method, body);
    await this.checkFile(projectId, body.training_file, "training_file");
    if (body.validation_file) await this.checkFile(projectId, body.validation_file, "validation_file");

    const id = newId.fineTuningJob();
    const validating = body.validation_file
      ? `Validating training file: ${body.training_file} and validation file: ${body.validation_file}`
      : `Validating training file: ${body.training_file}`;
    const row = await jobs.insertJob(
      db,
      {
        id,
        projectId,
        createdAt: nowSeconds(),
        model: body.model,
        baseModel: base,
        parentModel: parent,
        trainingFile: body.training_file,
        validationFile: body.validation_file ?? null,
        status: "validating_files",
        method,
        suffix: body.suffix ?? null,
        seed: body.seed ?? Math.floor(Math.random() * 2_147_483_647),
        metadata: body.metadata ?? null,
        integrations,
        resultFiles: [],
        createFingerprint: print,
      },
      [{ message: `Created fine-tuning job: ${id}` }, { message: validating }],
    );
    this.deps.onCreated();
    return toJobObject(row);
  }

  private async mustGet(projectId: string, id: string) {
    const row = await jobs.getJob(this.deps.db, projectId, id);
    if (!row) throw ApiError.noSuchJob(id);
    return row;
  }

  async retrieve(projectId: string, id: string) {
    return toJobObject(await this.mustGet(projectId, id));
  }

  async list(projectId: string, q: { after?: string | undefined; limit: number; metadata: Record<string, string> | null | undefined }) {
    let afterSeq: number | undefined;
    if (q.after !== undefined) {
      afterSeq = await jobs.getJobSeq(this.deps.db, projectId, q.after);
      if (afterSeq === undefined) throw ApiError.notFound(`No such fine-tuning job: ${q.after}`, "after");
    }
    const rows = await jobs.listJobs(this.deps.db, projectId, { limit: q.limit, afterSeq, metadata: q.metadata });
    return { object: "list" as const, data: rows.slice(0, q.limit).map(toJobObject), has_more: rows.length > q.limit };
  }

  async act(projectId: string, id: string, action: Action) {
    const rule = ACTIONS[action];
    const job = await this.mustGet(projectId, id);
    const set: Partial<jobs.NewJob> = { status: rule.to, estimatedFinish: null };
    if (action === "cancel") set.finishedAt = nowSeconds();
    const row = await jobs.transition(this.deps.db, id, rule.from, set, [{ message: rule.event }]);
    if (row) {
      if (row.status === "queued") this.deps.onQueued();
      return toJobObject(row);
    }
    const now = await this.mustGet(projectId, id);
    if (rule.already.includes(now.status)) return toJobObject(now);
    throw ApiError.badRequest(`Cannot ${action} a fine-tuning job whose status is '${now.status ?? job.status}'.`, "fine_tuning_job_id", "invalid_job_state");
  }

  async events(projectId: string, id: string, q: { after?: string | undefined; limit: number }) {
    await this.mustGet(projectId, id);
    let afterSeq: number | undefined;
    if (q.after !== undefined) {
      afterSeq = await jobs.getEventSeq(this.deps.db, id, q.after);
      if (afterSeq === undefined) throw ApiError.notFound(`No such event: ${q.after}`, "after");
    }
    const rows = await jobs.listEvents(this.deps.db, id, q.limit, afterSeq);
    return { object: "list" as const, data: rows.slice(0, q.limit).map(toEventObject), has_more: rows.length > q.limit };
  }

  async checkpoints(projectId: string, id: string, q: { after?: string | undefined; limit: number }) {
    await this.mustGet(projectId, id);
    const all = await jobs.listCheckpoints(this.deps.db, id);
    let start = 0;
    if (q.after !== undefined) {
      start = all.findIndex((c) => c.id === q.after) + 1;
      if (start === 0) throw ApiError.notFound(`No such checkpoint: ${q.after}`, "after");
    }
    const page = all.slice(start, start + q.limit).map(toCheckpointObject);
    return {
      object: "list" as const,
      data: page,
      first_id: page[0]?.id ?? null,
      last_id: page.at(-1)?.id ?? null,
      has_more: start + q.limit < all.length,
    };
  }
}
