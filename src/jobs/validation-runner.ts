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
import {
  AUTO_DPO_BETA,
  AUTO_DPO_RPO_ALPHA,
  AUTO_DPO_LEARNING_RATE_MULTIPLIER,
  resolveAutoHyperparameters,
  validateTrainingFile,
  type FileParam,
  type FileValidation,
  type RequestedHyperparameters,
} from "./validation/validate-file.js";

const LEASE_MS = 5 * 60_000;

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

type Hp = Record<string, number | string>;
type Method = { type: "supervised"; supervised: { hyperparameters: Hp } } | { type: "dpo"; dpo: { hyperparameters: Hp } };

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
    const format = (job.method as Method).type === "dpo" ? "preference" : "chat";
    return await validateTrainingFile(lines, { fileId, param, tokenizer, format, minExamples: param === "training_file" ? 10 : 1 });
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

/** The method with every "auto" replaced by its number, so the trainer receives numbers only. */
function resolveMethod(method: Method, nExamples: number): Method {
  const dpo = method.type === "dpo";
  const hp = dpo ? method.dpo.hyperparameters : method.supervised.hyperparameters;
  const requested = { ...hp } as RequestedHyperparameters;
  if (dpo && hp.learning_rate_multiplier === "auto") requested.learning_rate_multiplier = AUTO_DPO_LEARNING_RATE_MULTIPLIER;
  const resolved: Hp = { ...resolveAutoHyperparameters({ nExamples, requested }) };
  if (!dpo) return { type: "supervised", supervised: { hyperparameters: resolved } };
  const beta = hp.beta === "auto" || hp.beta === undefined ? AUTO_DPO_BETA : hp.beta;
  const rpo_alpha = hp.rpo_alpha === "auto" || hp.rpo_alpha === undefined ? AUTO_DPO_RPO_ALPHA : hp.rpo_alpha;
  return { type: "dpo", dpo: { hyperparameters: { ...resolved, beta, rpo_alpha } } };
}

export async function validateJob(deps: ValidatorDeps, job: JobRow): Promise<void> {
  const training = await validateOne(deps, job, job.trainingFile, "training_file");
  if (!training.ok) return fail(deps, job, training.error);
  if (job.validationFile) {
    const validation = await validateOne(deps, job, job.validationFile, "validation_file");
    if (!validation.ok) return fail(deps, job, validation.error);
  }
  const method = resolveMethod(job.method as Method, training.nExamples);
  await deps.db.transaction(async (tx) => {
    const fairRank = await nextFairRank(tx, job.projectId);
    await transition(
      tx,
      job.id,
      ["validating_files"],
      {
        status: "queued",
        method,
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
