// Moves jobs out of validating_files: each file is read from the blob store line by line and
// checked against the chat format and the base model's tokenizer; then the job is queued with
// its "auto" hyperparameters resolved, or failed with OpenAI's error code. Validation claims a
// job with a lease (like training does), so a crashed validator's job is picked up again and
// several API replicas can validate side by side.
import path from "node:path";
import readline from "node:readline";
import { and, eq, sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { BlobStore } from "../storage/blob-store.js";
import type { Db } from "../storage/db.js";
import { getFile } from "../storage/repos/files.js";
import { fineTuningJobs } from "../storage/schema.js";
import type { BaseModels } from "./base-models.js";
import { nextFairRank } from "./queue.js";
import { transition, type JobRow } from "./repo.js";
import { loadChatTokenizer } from "./validation/tokenizer.js";
import { resolveAutoHyperparameters, validateTrainingFile, type FileParam, type FileValidation } from "./validation/validate-file.js";

const LEASE_MS = 5 * 60_000;

// Defaults of our LoRA extensions, echoed resolved like OpenAI's own hyperparameters.
export const LORA_DEFAULTS = { lora_rank: 16, lora_alpha: 32, lora_dropout: 0.05 } as const;

export interface ValidatorDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly baseModels: BaseModels;
  readonly log: Logger;
  readonly owner: string;
}

async function claimValidation(db: Db, owner: string): Promise<JobRow | undefined> {
  return db.transaction(async (tx) => {
    const now = Date.now();
    const [next] = await tx
      .select({ id: fineTuningJobs.id })
      .from(fineTuningJobs)
      .where(
        and(
          eq(fineTuningJobs.status, "validating_files"),
          sql`(${fineTuningJobs.leaseOwner} is null or ${fineTuningJobs.leaseExpiresAt} < ${now})`,
        ),
      )
      .orderBy(fineTuningJobs.seq)
      .limit(1)
      .for("update", { skipLocked: true });
    if (!next) return undefined;
    const [row] = await tx
      .update(fineTuningJobs)
      .set({ leaseOwner: owner, leaseExpiresAt: now + LEASE_MS })
      .where(eq(fineTuningJobs.id, next.id))
      .returning();
    return row;
  });
}

async function validateOne(deps: ValidatorDeps, job: JobRow, fileId: string, param: FileParam): Promise<FileValidation> {
  const file = await getFile(deps.db, job.projectId, fileId, Math.floor(Date.now() / 1000));
  const kind = param === "training_file" ? "training" : "validation";
  if (!file) {
    return { ok: false, error: { code: param === "training_file" ? "invalid_training_file" : "invalid_validation_file", param, message: `The ${kind} file ${fileId} no longer exists.` } };
  }
  const model = await deps.baseModels.get(job.baseModel);
  if (!model) throw new Error((await deps.baseModels.incomplete(job.baseModel)) ?? `The base model ${job.baseModel} is gone from the models dir.`);
  const tokenizer = await loadChatTokenizer(model.dir);
  const input = await deps.blobs.get(file.blobKey);
  const lines = readline.createInterface({ input, crlfDelay: Infinity });
  try {
    const result = await validateTrainingFile(lines, { fileId, param, tokenizer, minExamples: param === "training_file" ? 10 : 1 });
    if (!result.ok) result.error.message = `${result.error.message} (file ${fileId})`;
    return result;
  } finally {
    lines.close();
    input.destroy();
  }
}

async function fail(deps: ValidatorDeps, job: JobRow, error: { code: string; param: string | null; message: string }) {
  await transition(
    deps.db,
    job.id,
    ["validating_files"],
    { status: "failed", error, leaseOwner: null, leaseExpiresAt: null },
    [{ level: "error", message: error.message }],
    eq(fineTuningJobs.leaseOwner, deps.owner),
  );
}

export async function validateJob(deps: ValidatorDeps, job: JobRow): Promise<void> {
  const training = await validateOne(deps, job, job.trainingFile, "training_file");
  if (!training.ok) return fail(deps, job, training.error);
  if (job.validationFile) {
    const validation = await validateOne(deps, job, job.validationFile, "validation_file");
    if (!validation.ok) return fail(deps, job, validation.error);
  }
  const method = job.method as { type: string; supervised: { hyperparameters: Record<string, number | string> } };
  const hp = method.supervised.hyperparameters;
  const core = resolveAutoHyperparameters({
    nExamples: training.nExamples,
    requested: { n_epochs: hp.n_epochs as number | "auto", batch_size: hp.batch_size as number | "auto", learning_rate_multiplier: hp.learning_rate_multiplier as number | "auto" },
  });
  const pick = (k: keyof typeof LORA_DEFAULTS) => (hp[k] === "auto" || hp[k] === undefined ? LORA_DEFAULTS[k] : hp[k]);
  const resolved = { ...hp, ...core, lora_rank: pick("lora_rank"), lora_alpha: pick("lora_alpha"), lora_dropout: pick("lora_dropout") };
  await deps.db.transaction(async (tx) => {
    const fairRank = await nextFairRank(tx, job.projectId);
    await transition(
      tx,
      job.id,
      ["validating_files"],
      {
        status: "queued",
        method: { ...method, supervised: { hyperparameters: resolved } },
        nExamples: training.nExamples,
        epochTokens: training.totalTokens,
        fairRank,
        leaseOwner: null,
        leaseExpiresAt: null,
      },
      [{ message: "Files validated, moving job to queued state" }],
      eq(fineTuningJobs.leaseOwner, deps.owner),
    );
  });
}

/** Validates every waiting job, one at a time. Returns how many it handled. */
export async function drainValidations(deps: ValidatorDeps): Promise<number> {
  let n = 0;
  for (let job = await claimValidation(deps.db, deps.owner); job; job = await claimValidation(deps.db, deps.owner)) {
    n++;
    try {
      await validateJob(deps, job);
    } catch (err) {
      deps.log.error({ err, jobId: job.id }, "validation crashed");
      await fail(deps, job, { code: "validation_error", param: null, message: `The job failed while validating its files: ${(err as Error).message.replaceAll(deps.baseModels.dir + path.sep, "")}` });
    }
  }
  return n;
}
