// Every SQL statement on jobs, events, checkpoints and models that is not part of the queue.
// State changes are guarded UPDATEs (`WHERE status IN (...)`) that insert their event in the same
// transaction, so a retried request can never apply a transition twice.
import { and, desc, eq, inArray, isNull, lt, or, sql, type SQL } from "drizzle-orm";
import { newId, nowSeconds } from "../ids.js";
import type { Db } from "../storage/db.js";
import { checkpointPermissions, fineTuningJobs, jobCheckpoints, jobEvents, models } from "../storage/schema.js";

export type JobRow = typeof fineTuningJobs.$inferSelect;
export type NewJob = typeof fineTuningJobs.$inferInsert;
export type EventRow = typeof jobEvents.$inferSelect;
export type CheckpointRow = typeof jobCheckpoints.$inferSelect;
export type ModelRow = typeof models.$inferSelect;
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];
export type DbOrTx = Db | Tx;

export interface NewEvent {
  readonly level?: "info" | "warn" | "error";
  readonly message: string;
  readonly type?: "message" | "metrics";
  readonly data?: Record<string, unknown> | null;
}

export const newEventId = newId.fineTuningEvent;

export async function insertEvents(db: DbOrTx, jobId: string, events: readonly NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  const createdAt = nowSeconds();
  await db.insert(jobEvents).values(
    events.map((e) => ({
      id: newEventId(),
      jobId,
      createdAt,
      level: e.level ?? "info",
      message: e.message,
      type: e.type ?? "message",
      data: e.data ?? {},
    })),
  );
}

export async function insertJob(db: Db, job: NewJob, events: readonly NewEvent[]): Promise<JobRow> {
  return db.transaction(async (tx) => {
    const [row] = await tx.insert(fineTuningJobs).values(job).returning();
    await insertEvents(tx, row!.id, events);
    return row!;
  });
}

export async function findJobByFingerprint(db: Db, projectId: string, fingerprint: string, sinceSec: number) {
  const [row] = await db
    .select()
    .from(fineTuningJobs)
    .where(
      and(
        eq(fineTuningJobs.projectId, projectId),
        eq(fineTuningJobs.createFingerprint, fingerprint),
        sql`${fineTuningJobs.createdAt} >= ${sinceSec}`,
      ),
    )
    .orderBy(desc(fineTuningJobs.seq))
    .limit(1);
  return row;
}

export async function getJob(db: DbOrTx, projectId: string | undefined, id: string): Promise<JobRow | undefined> {
  const conds: SQL[] = [eq(fineTuningJobs.id, id)];
  if (projectId !== undefined) conds.push(eq(fineTuningJobs.projectId, projectId));
  const [row] = await db.select().from(fineTuningJobs).where(and(...conds));
  return row;
}

export async function getJobSeq(db: Db, projectId: string, id: string): Promise<number | undefined> {
  return (await getJob(db, projectId, id))?.seq;
}

export interface ListJobsQuery {
  readonly limit: number;
  readonly afterSeq: number | undefined;
  /** key → value pairs that must all match; null = jobs without metadata. */
  readonly metadata: Record<string, string> | null | undefined;
}

export async function listJobs(db: Db, projectId: string, q: ListJobsQuery): Promise<JobRow[]> {
  const conds: SQL[] = [eq(fineTuningJobs.projectId, projectId)];
  if (q.afterSeq !== undefined) conds.push(lt(fineTuningJobs.seq, q.afterSeq));
  if (q.metadata === null) conds.push(sql`(${fineTuningJobs.metadata} is null or ${fineTuningJobs.metadata} = 'null'::jsonb)`);
  else if (q.metadata) conds.push(sql`${fineTuningJobs.metadata} @> ${JSON.stringify(q.metadata)}::jsonb`);
  return db
    .select()
    .from(fineTuningJobs)
    .where(and(...conds))
    .orderBy(desc(fineTuningJobs.seq))
    .limit(q.limit + 1);
}

/**
 * The one way a job changes state: an UPDATE guarded by the allowed source states, plus its
 * events, in one transaction. Returns undefined when the job was not in any of `from`.
 */
export async function transition(
  db: DbOrTx,
  id: string,
  from: readonly string[],
  set: Partial<NewJob>,
  events: readonly NewEvent[],
  extra?: SQL,
): Promise<JobRow | undefined> {
  const run = async (tx: DbOrTx) => {
    const where = and(eq(fineTuningJobs.id, id), inArray(fineTuningJobs.status, [...from]), extra);
    const [row] = await tx.update(fineTuningJobs).set(set).where(where).returning();
    if (row) await insertEvents(tx, id, events);
    return row;
  };
  // Inside a caller's transaction this is a savepoint, so the update and its events still go
  // together.
  return db.transaction(run);
}

export async function listEvents(db: Db, jobId: string, limit: number, afterSeq: number | undefined) {
  const conds: SQL[] = [eq(jobEvents.jobId, jobId)];
  if (afterSeq !== undefined) conds.push(lt(jobEvents.seq, afterSeq));
  return db
    .select()
    .from(jobEvents)
    .where(and(...conds))
    .orderBy(desc(jobEvents.seq))
    .limit(limit + 1);
}

export async function getEventSeq(db: Db, jobId: string, id: string): Promise<number | undefined> {
  const [row] = await db
    .select({ seq: jobEvents.seq })
    .from(jobEvents)
    .where(and(eq(jobEvents.jobId, jobId), eq(jobEvents.id, id)));
  return row?.seq;
}

export async function metricEvents(db: Db, jobId: string): Promise<EventRow[]> {
  return db
    .select()
    .from(jobEvents)
    .where(and(eq(jobEvents.jobId, jobId), eq(jobEvents.type, "metrics")))
    .orderBy(jobEvents.seq);
}

export async function listCheckpoints(db: Db, jobId: string): Promise<CheckpointRow[]> {
  return db
    .select()
    .from(jobCheckpoints)
    .where(and(eq(jobCheckpoints.jobId, jobId), isNull(jobCheckpoints.deletedAt)))
    .orderBy(desc(jobCheckpoints.stepNumber));
}

export async function insertModel(db: DbOrTx, row: typeof models.$inferInsert): Promise<void> {
  await db.insert(models).values(row).onConflictDoNothing();
}

/** The project's own models and those another project granted it (checkpoint permissions). */
function visibleTo(projectId: string): SQL {
  return or(
    eq(models.projectId, projectId),
    sql`exists (select 1 from ${checkpointPermissions} where ${checkpointPermissions.modelId} = ${models.id} and ${checkpointPermissions.projectId} = ${projectId})`,
  )!;
}

export async function getModel(db: Db, projectId: string, id: string): Promise<ModelRow | undefined> {
  const [row] = await db
    .select()
    .from(models)
    .where(and(eq(models.id, id), visibleTo(projectId), isNull(models.deletedAt)));
  return row;
}

export async function listModels(db: Db, projectId: string): Promise<ModelRow[]> {
  return db
    .select()
    .from(models)
    .where(and(visibleTo(projectId), isNull(models.deletedAt)))
    .orderBy(models.createdAt);
}

/** Marks a model of the project deleted; returns whether it was there. */
export async function deleteModel(db: Db, projectId: string, id: string): Promise<boolean> {
  const rows = await db
    .update(models)
    .set({ deletedAt: nowSeconds() })
    .where(and(eq(models.id, id), eq(models.projectId, projectId), isNull(models.deletedAt)))
    .returning({ id: models.id });
  return rows.length > 0;
}
