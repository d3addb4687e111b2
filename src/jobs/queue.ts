// The job queue: a table read with FOR UPDATE SKIP LOCKED (as graphile-worker and pg-boss do).
// A claim takes a lease that heartbeats extend; cancel and pause reach the running worker in the
// heartbeat reply; a lapsed lease puts the job back (a bounded number of times).
//
// Fairness: each queued job carries fair_rank, fixed when it is enqueued: one more than the
// highest rank of its own project's unfinished jobs, but never below the lowest rank still
// queued (start-time fair queuing). Claims take the lowest (fair_rank, seq), so projects take
// turns while each project's own jobs stay first in, first out, and one index serves the claim.
import { and, eq, inArray, isNotNull, lt, min, sql } from "drizzle-orm";
import type { Db } from "../storage/db.js";
import { fineTuningJobs } from "../storage/schema.js";
import { insertEvents, type DbOrTx } from "./repo.js";

const UNFINISHED = ["queued", "running", "paused"];

/** The rank a job of `projectId` gets when it joins the queue now. */
export async function nextFairRank(db: DbOrTx, projectId: string): Promise<number> {
  const [own] = await db
    .select({ top: sql<number | null>`max(${fineTuningJobs.fairRank})` })
    .from(fineTuningJobs)
    .where(and(eq(fineTuningJobs.projectId, projectId), inArray(fineTuningJobs.status, UNFINISHED)));
  const [floor] = await db
    .select({ low: min(fineTuningJobs.fairRank) })
    .from(fineTuningJobs)
    .where(eq(fineTuningJobs.status, "queued"));
  const next = own?.top === null || own?.top === undefined ? 0 : Number(own.top) + 1;
  return Math.max(next, Number(floor?.low ?? 0));
}

/** A claimed job, with the newest checkpoint it resumes from (if any). */
export interface Claim {
  readonly id: string;
  readonly projectId: string;
  readonly attempts: number;
  readonly baseModel: string;
  readonly parentModel: string | null;
  readonly trainingFile: string;
  readonly validationFile: string | null;
  readonly method: unknown;
  readonly integrations: unknown;
  readonly seed: number;
  readonly suffix: string | null;
  readonly nExamples: number | null;
  readonly epochTokens: number | null;
  readonly leaseExpiresAt: number;
  readonly resume: { readonly id: string; readonly step: number; readonly epoch: number; readonly files: string[] } | null;
}

interface ClaimRow {
  id: string;
  project_id: string;
  attempts: number;
  base_model: string;
  parent_model: string | null;
  training_file: string;
  validation_file: string | null;
  method: unknown;
  integrations: unknown;
  seed: number;
  suffix: string | null;
  n_examples: number | null;
  epoch_tokens: string | number | null;
  lease_expires_at: string | number;
  ckpt_id: string | null;
  ckpt_step: number | null;
  ckpt_epoch: number | null;
  ckpt_files: string[] | null;
}

/**
 * Claims the next queued job for a worker, or undefined when none is free: one statement, one
 * round trip (as pg-boss does), which also finds the checkpoint to resume from and writes the
 * job's "started" or "resumed" event. SKIP LOCKED lets concurrent claimers pass over each
 * other's candidate row instead of queueing behind it; the lease_owner check keeps a paused then
 * resumed job away from new workers until the worker that paused it has let go.
 */
export async function claimNext(db: Db, workerId: string, leaseMs: number, eventId: string): Promise<Claim | undefined> {
  const now = Date.now();
  const result = await db.execute(sql`
    with next as (
      select id from fine_tuning_jobs
      where status = 'queued' and (lease_owner is null or lease_expires_at < ${now})
      order by fair_rank, seq
      limit 1
      for update skip locked
    ), claimed as (
      update fine_tuning_jobs j set status = 'running', lease_owner = ${workerId}, lease_expires_at = ${now + leaseMs}
      from next where j.id = next.id
      returning j.*
    ), ckpt as (
      select c.id, c.step_number, c.epoch, c.files from job_checkpoints c join claimed on c.job_id = claimed.id
      where c.deleted_at is null order by c.step_number desc limit 1
    ), event as (
      insert into job_events (id, job_id, created_at, level, message, type, data)
      select ${eventId}, claimed.id, ${Math.floor(now / 1000)}, 'info',
        coalesce('Fine-tuning job resumed from the checkpoint at step ' || (select step_number from ckpt), 'Fine-tuning job started'),
        'message', '{}'::jsonb
      from claimed
    )
    select claimed.*, ckpt.id as ckpt_id, ckpt.step_number as ckpt_step, ckpt.epoch as ckpt_epoch, ckpt.files as ckpt_files
    from claimed left join ckpt on true`);
  const row = (result as unknown as { rows: ClaimRow[] }).rows[0];
  if (!row) return undefined;
  return {
    id: row.id,
    projectId: row.project_id,
    attempts: row.attempts,
    baseModel: row.base_model,
    parentModel: row.parent_model,
    trainingFile: row.training_file,
    validationFile: row.validation_file,
    method: row.method,
    integrations: row.integrations ?? [],
    seed: row.seed,
    suffix: row.suffix,
    nExamples: row.n_examples,
    epochTokens: row.epoch_tokens === null ? null : Number(row.epoch_tokens),
    leaseExpiresAt: Number(row.lease_expires_at),
    resume: row.ckpt_id === null ? null : { id: row.ckpt_id, step: row.ckpt_step!, epoch: row.ckpt_epoch!, files: row.ckpt_files! },
  };
}

export type HeartbeatAction = "continue" | "cancel" | "pause" | "lost";

/** Extends the lease of a job the worker holds and tells it what the user asked for meanwhile. */
export async function heartbeat(db: Db, jobId: string, workerId: string, leaseMs: number): Promise<HeartbeatAction> {
  const [row] = await db
    .update(fineTuningJobs)
    .set({ leaseExpiresAt: Date.now() + leaseMs })
    .where(
      and(
        eq(fineTuningJobs.id, jobId),
        eq(fineTuningJobs.leaseOwner, workerId),
        inArray(fineTuningJobs.status, ["running", "paused", "cancelled", "queued"]),
      ),
    )
    .returning({ status: fineTuningJobs.status });
  if (!row) return "lost";
  if (row.status === "cancelled") return "cancel";
  // Queued while we hold it: the user paused and resumed before we noticed. Stop as for a
  // pause (checkpoint, let go); the job then resumes from that checkpoint.
  if (row.status === "paused" || row.status === "queued") return "pause";
  return "continue";
}

/**
 * The worker lets go of a job it stopped. A paused or cancelled job just loses its lease; a job
 * still running (its worker is shutting down) goes back to the queue at once, without counting
 * as a lost attempt, and the next worker resumes it from its newest checkpoint.
 */
export async function release(db: Db, jobId: string, workerId: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const held = and(eq(fineTuningJobs.id, jobId), eq(fineTuningJobs.leaseOwner, workerId));
    const requeued = await tx
      .update(fineTuningJobs)
      .set({ status: "queued", leaseOwner: null, leaseExpiresAt: null, estimatedFinish: null })
      .where(and(held, eq(fineTuningJobs.status, "running")))
      .returning({ id: fineTuningJobs.id });
    if (requeued.length > 0) {
      await insertEvents(tx, jobId, [{ level: "warn", message: "The worker this job was handed to let it go; the job was put back in the queue" }]);
      return true;
    }
    const rows = await tx
      .update(fineTuningJobs)
      .set({ leaseOwner: null, leaseExpiresAt: null })
      .where(held)
      .returning({ id: fineTuningJobs.id });
    return rows.length > 0;
  });
}

/**
 * Running jobs whose lease lapsed (their worker died or lost the network) go back to the queue,
 * keeping their rank, until max_attempts; then they fail with a clear error. Stale leases of
 * paused or cancelled jobs are simply cleared.
 */
export async function reapExpiredLeases(db: Db): Promise<{ requeued: number; failed: number }> {
  const now = Date.now();
  const expired = await db
    .select()
    .from(fineTuningJobs)
    .where(and(isNotNull(fineTuningJobs.leaseOwner), lt(fineTuningJobs.leaseExpiresAt, now)))
    .limit(100);
  let requeued = 0;
  let failed = 0;
  for (const job of expired) {
    await db.transaction(async (tx) => {
      const guard = and(
        eq(fineTuningJobs.id, job.id),
        eq(fineTuningJobs.leaseOwner, job.leaseOwner!),
        lt(fineTuningJobs.leaseExpiresAt, now),
      );
      if (job.status !== "running") {
        await tx.update(fineTuningJobs).set({ leaseOwner: null, leaseExpiresAt: null }).where(guard);
        return;
      }
      const lost = job.attempts + 1;
      if (lost < job.maxAttempts) {
        const rows = await tx
          .update(fineTuningJobs)
          .set({ status: "queued", leaseOwner: null, leaseExpiresAt: null, estimatedFinish: null, attempts: lost })
          .where(and(guard, eq(fineTuningJobs.status, "running")))
          .returning({ id: fineTuningJobs.id });
        if (rows.length === 0) return;
        requeued++;
        await insertEvents(tx, job.id, [
          { level: "warn", message: `The worker running this job stopped responding; the job was put back in the queue and attempt ${lost + 1} of ${job.maxAttempts} will resume from its latest checkpoint` },
        ]);
        return;
      }
      const error = {
        code: "worker_lost",
        param: null,
        message: `The job failed: its worker stopped responding ${lost} times.`,
      };
      const rows = await tx
        .update(fineTuningJobs)
        .set({ status: "failed", leaseOwner: null, leaseExpiresAt: null, error, attempts: lost, finishedAt: Math.floor(now / 1000), estimatedFinish: null })
        .where(and(guard, eq(fineTuningJobs.status, "running")))
        .returning({ id: fineTuningJobs.id });
      if (rows.length === 0) return;
      failed++;
      await insertEvents(tx, job.id, [{ level: "error", message: error.message }]);
    });
  }
  return { requeued, failed };
}

/**
 * An attempt failed in a way that may pass (one of its training processes was killed): while
 * attempts are left the job goes back to the queue, keeping its rank, and the next attempt resumes
 * from its newest checkpoint, as for a lost worker; the message (the failed process's log tail) is
 * kept as a warning event. False when no attempt is left or the caller no longer holds the job.
 */
export async function retryRun(db: Db, jobId: string, workerId: string, message: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [job] = await tx
      .select({ attempts: fineTuningJobs.attempts, maxAttempts: fineTuningJobs.maxAttempts })
      .from(fineTuningJobs)
      .where(and(eq(fineTuningJobs.id, jobId), eq(fineTuningJobs.leaseOwner, workerId), eq(fineTuningJobs.status, "running")));
    if (!job || job.attempts + 1 >= job.maxAttempts) return false;
    const next = job.attempts + 1;
    await tx
      .update(fineTuningJobs)
      .set({ status: "queued", leaseOwner: null, leaseExpiresAt: null, estimatedFinish: null, attempts: next })
      .where(eq(fineTuningJobs.id, jobId));
    await insertEvents(tx, jobId, [
      { level: "warn", message: `${message}\nThe job was put back in the queue; attempt ${next + 1} of ${job.maxAttempts} will resume from its latest checkpoint.` },
    ]);
    return true;
  });
}
