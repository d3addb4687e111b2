// What a worker reports about the job it holds: events and metrics, checkpoints, success and
// failure. Every write is guarded by the worker's lease, so a worker that lost its job (its
// lease lapsed and another took over) can change nothing; repeats of the same report are no-ops.
import { and, desc, eq, inArray, isNull, sql } from "drizzle-orm";
import { Readable } from "node:stream";
import { newId, nowSeconds } from "../ids.js";
import type { BlobStore } from "../storage/blob-store.js";
import type { Db } from "../storage/db.js";
import { beginUpload, insertOwnFile } from "../storage/repos/files.js";
import { projects, fineTuningJobs, jobCheckpoints, models } from "../storage/schema.js";
import { checkpointModelName, fineTunedModelName } from "./names.js";
import { insertEvents, insertModel, metricEvents, newEventId, transition, type JobRow, type NewEvent } from "./repo.js";

// OpenAI keeps the checkpoints of the last three epochs.
const KEEP_CHECKPOINTS = 3;

export class RunError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

export const checkpointPrefix = (jobId: string, step: number) => `jobs/${jobId}/ckpt-step-${step}/`;
export const finalPrefix = (jobId: string) => `jobs/${jobId}/final/`;

export type NewEventInput = NewEvent;

export async function anyJob(db: Db, jobId: string): Promise<JobRow | undefined> {
  const [row] = await db.select().from(fineTuningJobs).where(eq(fineTuningJobs.id, jobId));
  return row;
}

/** The job, if this worker holds its lease. */
export async function heldJob(db: Db, jobId: string, workerId: string): Promise<JobRow> {
  const row = await anyJob(db, jobId);
  if (!row) throw new RunError(404, `no such job: ${jobId}`);
  if (row.leaseOwner !== workerId) throw new RunError(409, `this worker does not hold job ${jobId}`);
  return row;
}

async function projectName(db: Db, id: string): Promise<string> {
  const [p] = await db.select({ name: projects.name }).from(projects).where(eq(projects.id, id));
  return p?.name ?? "project";
}

async function requireBlobs(blobs: BlobStore, prefix: string, files: readonly string[]): Promise<void> {
  for (const f of files) {
    if (!(await blobs.exists(prefix + f))) throw new RunError(400, `missing upload ${prefix}${f}`);
  }
}

export interface Progress {
  readonly step: number;
  readonly totalSteps: number;
  readonly stepsPerSecond: number;
}

/** Events and metrics from the running job; progress updates estimated_finish. */
export async function recordEvents(db: Db, job: JobRow, events: readonly NewEvent[], progress: Progress | undefined) {
  await db.transaction(async (tx) => {
    // A cancelled job's events end with its cancel: steps the trainer finishes before the worker
    // hears of the cancel (at its next heartbeat) are not recorded. The row lock orders this
    // against the cancel's own transition.
    const [row] = await tx.select({ status: fineTuningJobs.status }).from(fineTuningJobs).where(eq(fineTuningJobs.id, job.id)).for("update");
    if (!row || row.status === "cancelled") return;
    await insertEvents(tx, job.id, events);
    if (progress && progress.stepsPerSecond > 0 && job.status === "running") {
      const left = Math.max(0, progress.totalSteps - progress.step) / progress.stepsPerSecond;
      await tx
        .update(fineTuningJobs)
        .set({ estimatedFinish: nowSeconds() + Math.ceil(left) })
        .where(and(eq(fineTuningJobs.id, job.id), eq(fineTuningJobs.status, "running")));
    }
  });
}

export interface CheckpointReport {
  readonly step: number;
  readonly epoch: number;
  readonly metrics: Record<string, number>;
  readonly files: readonly string[];
}

/** Registers a checkpoint whose files were uploaded, names it as a model, prunes old ones. */
export async function commitCheckpoint(db: Db, blobs: BlobStore, job: JobRow, c: CheckpointReport) {
  // The lease holder may still save the checkpoint of a pause after the user resumed (queued):
  // no other worker can claim the job until this one lets go.
  if (!["running", "paused", "queued"].includes(job.status)) throw new RunError(409, `job ${job.id} is ${job.status}`);
  const prefix = checkpointPrefix(job.id, c.step);
  await requireBlobs(blobs, prefix, c.files);
  const name = checkpointModelName(job.baseModel, await projectName(db, job.projectId), job.suffix, c.step);
  const pruned = await db.transaction(async (tx) => {
    const inserted = await tx
      .insert(jobCheckpoints)
      .values({ id: newId.checkpoint(), jobId: job.id, createdAt: nowSeconds(), stepNumber: c.step, epoch: c.epoch, metrics: { step: c.step, ...c.metrics }, modelName: name, blobPrefix: prefix, files: c.files })
      .onConflictDoNothing()
      .returning({ id: jobCheckpoints.id });
    if (inserted.length === 0) return []; // a repeated report
    await insertModel(tx, { id: name, projectId: job.projectId, jobId: job.id, kind: "checkpoint", baseModel: job.baseModel, blobPrefix: prefix, files: c.files, createdAt: nowSeconds() });
    await insertEvents(tx, job.id, [{ message: `Checkpoint created at step ${c.step}`, data: { step: c.step, model: name } }]);
    const old = await tx
      .select()
      .from(jobCheckpoints)
      .where(and(eq(jobCheckpoints.jobId, job.id), isNull(jobCheckpoints.deletedAt)))
      .orderBy(desc(jobCheckpoints.stepNumber))
      .offset(KEEP_CHECKPOINTS);
    if (old.length > 0) {
      const ids = old.map((o) => o.id);
      await tx.update(jobCheckpoints).set({ deletedAt: nowSeconds() }).where(inArray(jobCheckpoints.id, ids));
      await tx.update(models).set({ deletedAt: nowSeconds() }).where(inArray(models.id, old.map((o) => o.modelName)));
    }
    return old;
  });
  for (const o of pruned) for (const f of o.files as string[]) await blobs.delete(o.blobPrefix + f);
}

function resultsCsv(rows: ReadonlyArray<{ data: unknown }>): string {
  const cell = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? String(Number(v.toFixed(5))) : "");
  const lines = ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"];
  for (const r of rows) {
    const d = (r.data ?? {}) as Record<string, unknown>;
    // A DPO job has no token accuracy: its accuracy columns carry the reward accuracy (the share
    // of pairs whose preferred output gains more over the reference than the other one).
    const train = d.train_mean_token_accuracy ?? d.train_reward_accuracy;
    const valid = d.valid_mean_token_accuracy ?? d.valid_reward_accuracy;
    lines.push([d.step, d.train_loss, train, d.valid_loss, valid].map(cell).join(","));
  }
  return lines.join("\n") + "\n";
}

/**
 * The job succeeded: its result file (the metrics CSV, base64-encoded as OpenAI serves it) and
 * its ft: model appear in the same transaction as the state change, so a crash anywhere leaves
 * either a running job (whose worker retries) or exactly one model.
 */
export async function completeRun(db: Db, blobs: BlobStore, job: JobRow, workerId: string, r: { trainedTokens: number; files: readonly string[] }) {
  if (job.status === "succeeded") return job;
  if (job.status !== "running") throw new RunError(409, `job ${job.id} is ${job.status}`);
  const prefix = finalPrefix(job.id);
  await requireBlobs(blobs, prefix, r.files);
  const csv = resultsCsv(await metricEvents(db, job.id));
  const fileId = newId.file();
  const uploadId = newId.upload();
  const blobKey = `files/${fileId}`;
  await beginUpload(db, uploadId, blobKey, Date.now() + 10 * 60_000, nowSeconds());
  const body = Buffer.from(Buffer.from(csv).toString("base64"));
  const written = await blobs.put(blobKey, Readable.from([body]));
  const name = fineTunedModelName(job.baseModel, await projectName(db, job.projectId), job.suffix);
  const done = await db.transaction(async (tx) => {
    const row = await transition(
      tx,
      job.id,
      ["running"],
      { status: "succeeded", fineTunedModel: name, finishedAt: nowSeconds(), trainedTokens: r.trainedTokens, resultFiles: [fileId], estimatedFinish: null, leaseOwner: null, leaseExpiresAt: null },
      [{ message: `New fine-tuned model created: ${name}` }, { message: "The job has successfully completed" }],
      sql`${fineTuningJobs.leaseOwner} = ${workerId}`,
    );
    if (!row) return undefined;
    await insertOwnFile(tx, uploadId, { id: fileId, projectId: job.projectId, filename: "step_metrics.csv", purpose: "fine-tune-results", bytes: written.bytes, sha256: written.sha256, blobKey, createdAt: nowSeconds(), expiresAt: null });
    await insertModel(tx, { id: name, projectId: job.projectId, jobId: job.id, kind: "fine-tune", baseModel: job.baseModel, blobPrefix: prefix, files: r.files, createdAt: nowSeconds() });
    return row;
  });
  if (!done) {
    // Lost the race (cancelled, or the lease moved on): the upload row's lease lets the
    // sweeper remove the result blob, but do it now.
    await blobs.delete(blobKey);
    throw new RunError(409, `job ${job.id} is no longer running on this worker`);
  }
  return done;
}

/**
 * The trainer failed: one statement (a worker reports this on its hot path) that moves the
 * job to failed, if this worker still holds it running, and writes the error event.
 */
export async function failRun(db: Db, jobId: string, workerId: string, e: { code: string; message: string }) {
  const error = { code: e.code, message: e.message, param: null };
  const now = nowSeconds();
  const result = await db.execute(sql`
    with failed as (
      update fine_tuning_jobs set status = 'failed', error = ${JSON.stringify(error)}::jsonb, finished_at = ${now},
        estimated_finish = null, lease_owner = null, lease_expires_at = null
      where id = ${jobId} and status = 'running' and lease_owner = ${workerId}
      returning id
    ), event as (
      insert into job_events (id, job_id, created_at, level, message, type, data)
      select ${newEventId()}, failed.id, ${now}, 'error', ${e.message}, 'message', '{}'::jsonb from failed
    )
    select id from failed`);
  return (result as unknown as { rows: unknown[] }).rows.length > 0;
}

/** The newest kept checkpoint, from which a requeued or resumed job continues. */
export async function newestCheckpoint(db: Db, jobId: string) {
  const [row] = await db
    .select()
    .from(jobCheckpoints)
    .where(and(eq(jobCheckpoints.jobId, jobId), isNull(jobCheckpoints.deletedAt)))
    .orderBy(desc(jobCheckpoints.stepNumber))
    .limit(1);
  return row;
}
