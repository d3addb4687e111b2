// The worker protocol's logic, free of HTTP: claim (long-poll), heartbeat, events, uploads and
// downloads of job artifacts, checkpoint, complete, fail, release. Every call after claim is
// checked against the caller's lease.
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { BlobStore } from "../../storage/blob-store.js";
import type { Db } from "../../storage/db.js";
import { getFile } from "../../storage/repos/files.js";
import { claimNext, heartbeat, release, retryRun, type Claim } from "../../jobs/queue.js";
import { getModel, newEventId, type JobRow } from "../../jobs/repo.js";
import * as runs from "../../jobs/runs.js";
import type { Wakeup } from "../../jobs/wakeup.js";
import { touchWorker, type Worker } from "../../jobs/workers.js";
import { nowSeconds } from "../../ids.js";
import type { JobSpec } from "../../protocol/worker.js";
import { ApiError } from "../errors.js";
import { methodHyperparameters, toJobObject, type StoredMethod, type WandbIntegration } from "../fine-tuning/schema.js";

export interface InternalDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly wakeup: Wakeup;
  readonly leaseMs: number;
}

function fromRunError(err: unknown): never {
  if (err instanceof runs.RunError) {
    if (err.status === 404) throw ApiError.notFound(err.message, "job_id");
    if (err.status === 409) throw ApiError.of("lease_lost", err.message, "job_id");
    throw ApiError.badRequest(err.message);
  }
  throw err;
}

export class InternalService {
  constructor(private readonly deps: InternalDeps) {}

  private async held(worker: Worker, jobId: string): Promise<JobRow> {
    return runs.heldJob(this.deps.db, jobId, worker.id).catch(fromRunError);
  }

  private readonly touched = new Map<string, number>();

  /** Records that the worker is alive, at most every 30 s (it is informational). */
  private async touch(worker: Worker): Promise<void> {
    const last = this.touched.get(worker.id) ?? 0;
    if (Date.now() - last < 30_000) return;
    this.touched.set(worker.id, Date.now());
    await touchWorker(this.deps.db, worker.id);
  }

  async register(worker: Worker) {
    this.touched.delete(worker.id);
    await this.touch(worker);
    const leaseSeconds = this.deps.leaseMs / 1000;
    return { worker_id: worker.id, name: worker.name, lease_seconds: leaseSeconds, heartbeat_seconds: leaseSeconds / 4 };
  }

  /** Waits up to waitSeconds for a job; undefined when none came. */
  async claim(worker: Worker, waitSeconds: number, aborted: () => boolean) {
    const { db, wakeup, leaseMs } = this.deps;
    const deadline = Date.now() + waitSeconds * 1000;
    await this.touch(worker);
    for (;;) {
      const job = await claimNext(db, worker.id, leaseMs, newEventId());
      if (job && aborted()) {
        // The worker hung up while we claimed: hand the job straight back rather than leave it
        // held by nobody until the lease lapses.
        await release(db, job.id, worker.id);
        return undefined;
      }
      if (job) return this.spec(job);
      const left = deadline - Date.now();
      if (left <= 0 || aborted()) return undefined;
      // Another replica may queue a job without waking us: poll at least every second.
      await wakeup.wait(Math.min(left, 1000));
    }
  }

  private async spec(job: Claim): Promise<JobSpec> {
    const parent = job.parentModel ? await getModel(this.deps.db, job.projectId, job.parentModel) : undefined;
    const method = job.method as StoredMethod;
    return {
      job: {
        id: job.id,
        attempt: job.attempts + 1,
        base_model: job.baseModel,
        parent_model: job.parentModel,
        training_file: job.trainingFile,
        validation_file: job.validationFile,
        method: method.type,
        hyperparameters: methodHyperparameters(method),
        // wandb runs are named after the job (as OpenAI does), so a resumed job continues its run
        integrations: (job.integrations as WandbIntegration[]).map((i) => ({ ...i, wandb: { ...i.wandb, run_id: job.id } })),
        seed: job.seed,
        suffix: job.suffix,
        n_examples: job.nExamples,
        epoch_tokens: job.epochTokens,
      },
      resume: job.resume ? { checkpoint_id: job.resume.id, step: job.resume.step, epoch: job.resume.epoch, files: job.resume.files } : null,
      parent: parent ? { model: parent.id, files: parent.files as string[] } : null,
      lease: { expires_at_ms: job.leaseExpiresAt, lease_seconds: this.deps.leaseMs / 1000, heartbeat_seconds: this.deps.leaseMs / 4000 },
    };
  }

  async heartbeat(worker: Worker, jobId: string, progress: runs.Progress | undefined) {
    const action = await heartbeat(this.deps.db, jobId, worker.id, this.deps.leaseMs);
    if (action === "continue" && progress) {
      const job = await this.held(worker, jobId);
      await runs.recordEvents(this.deps.db, job, [], progress);
    }
    return { action, lease_expires_at_ms: action === "lost" ? null : Date.now() + this.deps.leaseMs };
  }

  async events(worker: Worker, jobId: string, events: runs.NewEventInput[], progress: runs.Progress | undefined) {
    const job = await this.held(worker, jobId);
    await runs.recordEvents(this.deps.db, job, events, progress);
    return { recorded: events.length };
  }

  async input(worker: Worker, jobId: string, which: "training_file" | "validation_file"): Promise<Readable> {
    const job = await this.held(worker, jobId);
    const id = which === "training_file" ? job.trainingFile : job.validationFile;
    const file = id ? await getFile(this.deps.db, job.projectId, id, nowSeconds()) : undefined;
    if (!file) throw ApiError.notFound(`job ${jobId} has no ${which}`, which);
    return this.deps.blobs.get(file.blobKey);
  }

  /** A file of the checkpoint the job resumes from, or of the ft: model it continues. */
  async source(worker: Worker, jobId: string, source: "resume" | "parent", name: string): Promise<Readable> {
    const job = await this.held(worker, jobId);
    let prefix: string | undefined;
    let files: string[] = [];
    if (source === "resume") {
      const c = await runs.newestCheckpoint(this.deps.db, job.id);
      prefix = c?.blobPrefix;
      files = (c?.files as string[] | undefined) ?? [];
    } else if (job.parentModel) {
      const m = await getModel(this.deps.db, job.projectId, job.parentModel);
      prefix = m?.blobPrefix;
      files = (m?.files as string[] | undefined) ?? [];
    }
    if (!prefix || !files.includes(name)) throw ApiError.notFound(`no ${source} file ${name} for job ${jobId}`, "file");
    return this.deps.blobs.get(prefix + name);
  }

  async putArtifact(worker: Worker, jobId: string, kind: "checkpoint" | "final", step: number, file: string, body: Readable) {
    await this.held(worker, jobId);
    const prefix = kind === "final" ? runs.finalPrefix(jobId) : runs.checkpointPrefix(jobId, step);
    const written = await this.deps.blobs.put(prefix + file, body);
    return { key: prefix + file, bytes: written.bytes, sha256: written.sha256 };
  }

  async checkpoint(worker: Worker, jobId: string, c: runs.CheckpointReport) {
    const job = await this.held(worker, jobId);
    await runs.commitCheckpoint(this.deps.db, this.deps.blobs, job, c).catch(fromRunError);
    return { step: c.step };
  }

  async complete(worker: Worker, jobId: string, r: { trainedTokens: number; files: readonly string[] }) {
    const existing = await runs.heldJob(this.deps.db, jobId, worker.id).catch(() => undefined);
    const job = existing ?? (await this.alreadyDone(jobId, "succeeded"));
    const done = await runs.completeRun(this.deps.db, this.deps.blobs, job, worker.id, r).catch(fromRunError);
    return toJobObject(done);
  }

  async fail(worker: Worker, jobId: string, e: { code: string; message: string; retryable?: boolean }) {
    if (e.retryable && (await retryRun(this.deps.db, jobId, worker.id, e.message))) {
      this.deps.wakeup.notify();
      return toJobObject((await runs.anyJob(this.deps.db, jobId))!);
    }
    if (!(await runs.failRun(this.deps.db, jobId, worker.id, e))) return toJobObject(await this.alreadyDone(jobId, "failed"));
    return toJobObject((await runs.anyJob(this.deps.db, jobId))!);
  }

  /** A repeated complete/fail (the worker retrying after a lost reply) finds the job finished. */
  private async alreadyDone(jobId: string, status: string): Promise<JobRow> {
    const job = await runs.anyJob(this.deps.db, jobId);
    if (job?.status === status) return job;
    throw ApiError.of("lease_lost", `this worker does not hold job ${jobId}`, "job_id");
  }

  async release(worker: Worker, jobId: string) {
    const released = await release(this.deps.db, jobId, worker.id);
    this.deps.wakeup.notify(); // a shut-down worker's job may be back in the queue
    return { released };
  }
}
