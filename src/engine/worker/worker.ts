// An engine worker: claims a job, runs it through a Runner (the trainer), keeps the lease alive
// with heartbeats, turns cancel and pause into a stop request, and reports the outcome.
import type { Logger } from "pino";
import { ProtocolClient, ProtocolError, type Action, type JobSpec, type Progress } from "./protocol-client.js";

export type StopReason = "cancel" | "pause" | "lost" | "shutdown";

export interface RunContext {
  readonly spec: JobSpec;
  readonly client: ProtocolClient;
  readonly log: Logger;
  /** Aborted when the job must stop; `signal.reason` is the StopReason. */
  readonly signal: AbortSignal;
  /** The runner reports progress here; heartbeats carry it to the API (estimated_finish). */
  setProgress(p: Progress): void;
}

export type RunOutcome =
  | { readonly kind: "succeeded"; readonly trainedTokens: number; readonly files: string[] }
  | { readonly kind: "failed"; readonly code: string; readonly message: string; readonly retryable?: boolean }
  | { readonly kind: "stopped" }
  /** The attempt died with its machine: reported as nothing, so that the lease lapses and the
   *  job resumes from its newest checkpoint as attempt n+1 (counted against max attempts, so a
   *  trainer killed every time still ends). */
  | { readonly kind: "lost"; readonly reason: string };

export interface Runner {
  run(ctx: RunContext): Promise<RunOutcome>;
}

export interface WorkerOptions {
  readonly client: ProtocolClient;
  readonly runner: Runner;
  readonly log: Logger;
  /** How long one claim waits for a job before asking again. */
  readonly claimWaitSeconds?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Worker {
  private stopping = false;
  private readonly shutdown = new AbortController();
  private current: AbortController | undefined;
  private loop: Promise<void> | undefined;

  constructor(private readonly opts: WorkerOptions) {}

  start(): void {
    this.loop = this.run();
  }

  /** Stops claiming; a running job is stopped as for a pause (its checkpoint saved) and let go. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.shutdown.abort();
    this.current?.abort("shutdown" satisfies StopReason);
    await this.loop;
  }

  private async run(): Promise<void> {
    const { client, log } = this.opts;
    while (!this.stopping) {
      try {
        const spec = await client.claim(this.opts.claimWaitSeconds ?? 20, this.shutdown.signal);
        if (spec) await this.runJob(spec);
      } catch (err) {
        if (this.stopping) break;
        log.warn({ err }, "worker loop error; retrying");
        await sleep(1000);
      }
    }
  }

  private async runJob(spec: JobSpec): Promise<void> {
    const { client, runner } = this.opts;
    const log = this.opts.log.child({ jobId: spec.job.id, attempt: spec.job.attempt });
    const stop = new AbortController();
    this.current = stop;
    let progress: Progress | undefined;
    const beat = setInterval(() => {
      client
        .heartbeat(spec.job.id, progress)
        .then((action: Action) => {
          if (action !== "continue" && !stop.signal.aborted) {
            log.info({ action }, "stopping the job");
            stop.abort(action);
          }
        })
        .catch((err: unknown) => log.warn({ err }, "heartbeat failed"));
    }, spec.lease.heartbeat_seconds * 1000);
    try {
      const outcome = await runner
        .run({ spec, client, log, signal: stop.signal, setProgress: (p) => (progress = p) })
        .catch((err: unknown): RunOutcome => ({ kind: "failed", code: "trainer_error", message: `The trainer crashed: ${(err as Error).message}` }));
      clearInterval(beat);
      await this.report(spec, outcome, stop.signal.reason as StopReason | undefined, log);
    } finally {
      clearInterval(beat);
      this.current = undefined;
    }
  }

  /** Reports the outcome, retrying while the API is unreachable (it may be restarting). */
  private async report(spec: JobSpec, outcome: RunOutcome, reason: StopReason | undefined, log: Logger) {
    for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
      try {
        await this.reportOnce(spec, outcome, reason, log);
        return;
      } catch (err) {
        if (err instanceof ProtocolError && err.status < 500) throw err;
        if (Date.now() > spec.lease.expires_at_ms + 10 * 60_000) throw err;
        log.warn({ err }, "could not report the outcome; retrying");
        await sleep(delay);
      }
    }
  }

  private async reportOnce(spec: JobSpec, outcome: RunOutcome, reason: StopReason | undefined, log: Logger) {
    const { client } = this.opts;
    const id = spec.job.id;
    try {
      if (reason === "lost") return; // another worker owns the job now: report nothing
      if (outcome.kind === "lost") {
        log.warn({ reason: outcome.reason }, "the attempt is lost; its lease will lapse and the job resume from its newest checkpoint");
        return;
      }
      if (outcome.kind === "succeeded" && reason === undefined) {
        await client.complete(id, { trained_tokens: outcome.trainedTokens, files: outcome.files });
      } else if (outcome.kind === "failed" && reason === undefined) {
        await client.fail(id, { code: outcome.code, message: outcome.message, ...(outcome.retryable ? { retryable: true } : {}) });
      } else {
        // Cancelled, paused or shutting down: let go. A running job we shut down on goes back
        // to the queue at once and resumes elsewhere from the checkpoint the runner saved.
        await client.release(id);
      }
    } catch (err) {
      if (err instanceof ProtocolError && err.status === 409) log.warn({ err }, "the job moved on without us");
      else throw err;
    }
  }
}
