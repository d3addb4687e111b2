// What /metrics reports of jobs, the queue and workers, read from the database at scrape time so
// that every API replica reports the same numbers (no counters kept in one process's memory).
import { sql } from "drizzle-orm";
import type { Db } from "../storage/db.js";

export interface QueueStats {
  readonly jobsByStatus: ReadonlyMap<string, number>;
  /** Jobs waiting for a worker and the age of the oldest, in seconds (0 when none wait). */
  readonly queued: number;
  readonly oldestQueuedSeconds: number;
}

export interface WorkerStats {
  readonly name: string;
  readonly lastSeenAt: number;
}

/** The newest metrics event of a running job, with what it trains and who runs it. */
export interface RunningJobStats {
  readonly baseModel: string;
  readonly worker: string;
  readonly step: number;
  readonly trainLoss: number | undefined;
  readonly tokensPerSecond: number | undefined;
}

function rows<T>(result: unknown): T[] {
  return (result as { rows: T[] }).rows;
}

export async function queueStats(db: Db): Promise<QueueStats> {
  const byStatus = rows<{ status: string; n: number | string; oldest: number | string | null }>(
    await db.execute(sql`select status, count(*) as n, min(created_at) as oldest from fine_tuning_jobs group by status`),
  );
  const jobsByStatus = new Map(byStatus.map((r) => [r.status, Number(r.n)]));
  const queuedRow = byStatus.find((r) => r.status === "queued");
  const oldest = queuedRow?.oldest === null || queuedRow?.oldest === undefined ? undefined : Number(queuedRow.oldest);
  return {
    jobsByStatus,
    queued: jobsByStatus.get("queued") ?? 0,
    oldestQueuedSeconds: oldest === undefined ? 0 : Math.max(0, Date.now() / 1000 - oldest),
  };
}

/** Workers seen within `withinSeconds` (an hour by default: older rows are workers long gone,
 *  and an embedded worker is a new row per server start, so this keeps the label set bounded). */
export async function recentWorkers(db: Db, withinSeconds = 3600): Promise<WorkerStats[]> {
  const since = Math.floor(Date.now() / 1000) - withinSeconds;
  return rows<{ name: string; last_seen_at: number | string }>(
    await db.execute(sql`select name, max(last_seen_at) as last_seen_at from workers where last_seen_at >= ${since} group by name`),
  ).map((r) => ({ name: r.name, lastSeenAt: Number(r.last_seen_at) }));
}

/** Tokens per second is the trainer's own average since it started: steps per second times the
 *  tokens trained per step so far. */
export async function runningJobStats(db: Db): Promise<RunningJobStats[]> {
  const result = await db.execute(sql`
    select distinct on (j.id) j.base_model, coalesce(w.name, 'unknown') as worker, e.data
    from fine_tuning_jobs j
    join job_events e on e.job_id = j.id and e.type = 'metrics'
    left join workers w on w.id = j.lease_owner
    where j.status = 'running'
    order by j.id, e.seq desc`);
  return rows<{ base_model: string; worker: string; data: Record<string, unknown> }>(result).map((r) => {
    const num = (k: string) => (typeof r.data[k] === "number" ? (r.data[k] as number) : undefined);
    const step = num("step") ?? 0;
    const tokens = num("tokens");
    const sps = num("steps_per_second");
    return {
      baseModel: r.base_model,
      worker: r.worker,
      step,
      trainLoss: num("train_loss"),
      tokensPerSecond: tokens !== undefined && sps !== undefined && step > 0 ? (sps * tokens) / step : undefined,
    };
  });
}
