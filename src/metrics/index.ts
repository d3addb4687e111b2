// The registry behind GET /metrics: Node's default process metrics plus openft's own families.
// One per server process (buildApp makes one when main.ts passes none).
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { QueueStats, RunningJobStats, WorkerStats } from "../jobs/stats.js";
import { ServingMetrics } from "./serving.js";

export { ServingMetrics, type CompletionObserver, type ServingSnapshot } from "./serving.js";

/** Where the job, queue and worker families come from (src/jobs/stats.ts over the database). */
export interface JobSources {
  queue(): Promise<QueueStats>;
  workers(): Promise<WorkerStats[]>;
  running(): Promise<RunningJobStats[]>;
  /** A worker is counted as connected when seen within this many seconds (its lease). */
  readonly connectedWithinSeconds: number;
}

const JOB_STATUSES = ["validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"];
// API latency in seconds: most routes answer in milliseconds; uploads and non-streamed
// completions take seconds.
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

type Settable = { reset(): void; set(labels: Record<string, string>, v: number): void };

export class Metrics {
  readonly registry = new Registry();
  readonly serving = new ServingMetrics(this.registry);
  private readonly httpRequests = new Counter({ name: "openft_http_requests_total", help: "HTTP requests answered, by route template and status.", labelNames: ["method", "route", "status"], registers: [this.registry] });
  private readonly httpDuration = new Histogram({ name: "openft_http_request_duration_seconds", help: "Time to answer an HTTP request (to the end of the response body).", labelNames: ["method", "route", "status"], buckets: HTTP_BUCKETS, registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** `route` is the matched template ("/v1/files/:file_id"), never the raw URL. */
  observeHttp(method: string, route: string, status: number, seconds: number): void {
    const labels = { method, route, status: String(status) };
    this.httpRequests.inc(labels);
    this.httpDuration.observe(labels, seconds);
  }

  /** Registers the job, queue, worker and trainer families, read from `src` at each scrape. */
  watchJobs(src: JobSources): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, labelNames: string[], fill: (g: Settable) => Promise<void>) =>
      new Gauge({ name, help, labelNames, registers, async collect() { this.reset(); await fill(this as unknown as Settable); } });
    gauge("openft_jobs", "Fine-tuning jobs by status.", ["status"], async (g) => {
      const q = await src.queue();
      for (const status of new Set([...JOB_STATUSES, ...q.jobsByStatus.keys()])) g.set({ status }, q.jobsByStatus.get(status) ?? 0);
    });
    gauge("openft_queue_depth", "Jobs queued for a worker.", [], async (g) => g.set({}, (await src.queue()).queued));
    gauge("openft_queue_oldest_age_seconds", "Age of the oldest queued job (0 when none is queued).", [], async (g) => g.set({}, (await src.queue()).oldestQueuedSeconds));
    gauge("openft_workers_connected", "Workers seen within their lease.", [], async (g) => {
      const since = Date.now() / 1000 - src.connectedWithinSeconds;
      g.set({}, (await src.workers()).filter((w) => w.lastSeenAt >= since).length);
    });
    gauge("openft_worker_last_heartbeat_timestamp_seconds", "When each worker seen in the last hour last called the API.", ["worker"], async (g) => {
      for (const w of await src.workers()) g.set({ worker: w.name }, w.lastSeenAt);
    });
    const trainer = (name: string, help: string, value: (r: RunningJobStats) => number | undefined) =>
      gauge(name, help, ["base_model", "worker"], async (g) => {
        for (const r of await src.running()) {
          const v = value(r);
          if (v !== undefined) g.set({ base_model: r.baseModel, worker: r.worker }, v);
        }
      });
    trainer("openft_trainer_tokens_per_second", "Training tokens per second of each running job (the trainer's average since it started).", (r) => r.tokensPerSecond);
    trainer("openft_trainer_step", "Last step reported by each running job.", (r) => r.step);
    trainer("openft_trainer_train_loss", "Last training loss reported by each running job.", (r) => r.trainLoss);
  }

  contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
