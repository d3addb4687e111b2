// Runs a job through the Python trainer (src/engine/trainer): fetches the inputs over the
// protocol, writes the job spec, spawns the trainer, turns its JSON lines into events,
// checkpoints and the final adapter, and turns cancel/pause into SIGTERM.
import { spawn } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import readline from "node:readline";
import { pipeline } from "node:stream/promises";
import type { ProtocolClient } from "./protocol-client.js";
import { eventSchemas, loadEventTable, parseTrainerLine, type TrainerEvent } from "./trainer-events.js";
import { describeExit, failedRanks, RankLogs, stopRanks, torchrunArgs, visibleGpus } from "./torchrun.js";
import type { RunContext, RunOutcome, Runner } from "./worker.js";

export interface TrainerRunnerOptions {
  /** The Python interpreter with the trainer's requirements (the project venv). */
  readonly python: string;
  /** The folder holding the openft_trainer package. */
  readonly trainerPath: string;
  readonly modelsDir: string;
  /** Per-job work folders go here (inputs, checkpoints, the trainer's log). */
  readonly workDir: string;
  readonly device?: "auto" | "cpu" | "cuda";
  /** Training processes per job; undefined: one per visible CUDA device, or 1 without CUDA.
   *  (On a CPU, more processes can pay: bench:train-speed on 2 cores, SmolLM2 LoRA r16, read 2
   *  processes x 1 thread 320.7 tokens/s vs 1 x 2 threads 282.0, the same held-out loss; 1 stays
   *  the CPU default because each process holds its own copy of the base.) */
  readonly processes?: number;
  /** With several processes: data parallel ("none"), FSDP, or the trainer's rule ("auto"). */
  readonly sharding?: "auto" | "none" | "fsdp";
  /** The environment the trainer runs in (the caller's, from src/config.ts). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

async function fetchTo(client: ProtocolClient, jobId: string, what: Parameters<ProtocolClient["download"]>[1], file: string) {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await pipeline(await client.download(jobId, what), createWriteStream(file));
}

async function uploadDir(client: ProtocolClient, jobId: string, kind: "checkpoint" | "final", step: number, dir: string, files: string[]) {
  for (const f of files) await client.upload(jobId, kind, step, f, createReadStream(path.join(dir, f)));
}

type ErrorEvent = Extract<TrainerEvent, { type: "error" }>;

export class TrainerRunner implements Runner {
  private readonly schemas: ReturnType<typeof eventSchemas>;
  private processes: Promise<number> | undefined;

  constructor(private readonly opts: TrainerRunnerOptions) {
    this.schemas = eventSchemas(loadEventTable(opts.trainerPath));
  }

  private processCount(): Promise<number> {
    const { processes, device, python, env } = this.opts;
    this.processes ??= processes !== undefined ? Promise.resolve(processes) : device === "cpu" ? Promise.resolve(1) : visibleGpus(python, env).then((n) => Math.max(1, n));
    return this.processes;
  }

  /** Downloads what the trainer reads and writes its spec; returns the spec's path. */
  private async prepare(ctx: RunContext, dir: string): Promise<string> {
    const { spec, client } = ctx;
    const id = spec.job.id;
    const train = path.join(dir, "train.jsonl");
    await fetchTo(client, id, { input: "training_file" }, train);
    let valid: string | null = null;
    if (spec.job.validation_file) {
      valid = path.join(dir, "valid.jsonl");
      await fetchTo(client, id, { input: "validation_file" }, valid);
    }
    let resume: string | null = null;
    if (spec.resume) {
      resume = path.join(dir, `resume-step-${spec.resume.step}`);
      for (const f of spec.resume.files) await fetchTo(client, id, { source: "resume", file: f }, path.join(resume, f));
    }
    let parent: string | null = null;
    if (spec.parent) {
      parent = path.join(dir, "parent");
      for (const f of spec.parent.files) await fetchTo(client, id, { source: "parent", file: f }, path.join(parent, f));
    }
    const file = path.join(dir, "spec.json");
    const body = {
      base_model_dir: path.join(this.opts.modelsDir, spec.job.base_model),
      train_file: train,
      validation_file: valid,
      output_dir: path.join(dir, "out"),
      resume_from: resume,
      init_adapter: parent,
      method: spec.job.method ?? "supervised",
      hyperparameters: spec.job.hyperparameters,
      integrations: spec.job.integrations ?? [],
      seed: spec.job.seed,
      device: this.opts.device ?? "auto",
      sharding: this.opts.sharding ?? "auto",
    };
    await fs.writeFile(file, JSON.stringify(body, null, 2));
    return file;
  }

  async run(ctx: RunContext): Promise<RunOutcome> {
    const dir = path.join(this.opts.workDir, ctx.spec.job.id, `attempt-${ctx.spec.job.attempt}-${Date.now()}`);
    await fs.mkdir(dir, { recursive: true });
    const specFile = await this.prepare(ctx, dir);
    const processes = await this.processCount();
    const log = createWriteStream(path.join(dir, "trainer.log"));
    const logs = new RankLogs();
    const child = spawn(this.opts.python, torchrunArgs(processes, specFile), {
      env: { ...this.opts.env, PYTHONPATH: this.opts.trainerPath, PYTHONUNBUFFERED: "1", HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stderr.on("data", (d: Buffer) => {
      log.write(d);
      logs.write(d.toString());
    });
    const onStop = () => void stopRanks(child.pid, () => child.kill("SIGTERM"));
    ctx.signal.addEventListener("abort", onStop, { once: true });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
    let outcome: RunOutcome | undefined;
    const errors: ErrorEvent[] = [];
    try {
      for await (const line of readline.createInterface({ input: child.stdout })) {
        if (!line.trim()) continue;
        log.write(`[stdout] ${line}\n`);
        const parsed = parseTrainerLine(this.schemas, line);
        if ("problem" in parsed) {
          log.write(`[worker] not a trainer event (${parsed.problem}): ${line}\n`);
          continue;
        }
        if (parsed.event.type === "error") errors.push(parsed.event);
        else outcome = (await this.handle(ctx, parsed.event)) ?? outcome;
      }
    } finally {
      ctx.signal.removeEventListener("abort", onStop);
    }
    const { code, signal } = await exited;
    log.end();
    if (outcome) return outcome;
    if (ctx.signal.aborted && errors.length === 0) return { kind: "stopped" };
    // torchrun itself killed by a signal nobody here sent (the OOM killer, an operator, a machine
    // going down): the machine's fault, not the job's, so the attempt is lost as if the worker had
    // died. (A killed training process is torchrun's to report: failure() below.)
    if (signal !== null) return { kind: "lost", reason: `the trainer was killed by ${signal}` };
    return this.failure(code, errors, logs, processes);
  }

  /**
   * Why the attempt failed: a process killed by a signal (retryable: the job resumes from its
   * checkpoint), else the trainer's own error (rank 0's, or the first failed rank's), else the
   * failed process's log tail.
   */
  private failure(code: number | null, errors: ErrorEvent[], logs: RankLogs, processes: number): RunOutcome {
    const failed = failedRanks(logs.launcher);
    const first = failed[0];
    const of = processes > 1 ? ` of ${processes}` : "";
    if (first && first.exitCode < 0 && first.exitCode !== -15) {
      const message = `Training process ${first.rank}${of} ${describeExit(first.exitCode)}. Its log ends with:\n${logs.tail(first.rank)}`;
      return { kind: "failed", code: "trainer_error", message, retryable: true };
    }
    const error = errors.find((e) => e.rank === 0) ?? errors.find((e) => e.rank === first?.rank) ?? errors[0];
    if (error) return { kind: "failed", code: error.code, message: error.message };
    const rank = first?.rank ?? 0;
    const how = first ? `Training process ${rank}${of} ${describeExit(first.exitCode)}` : `The trainer exited with code ${code}`;
    return { kind: "failed", code: "trainer_error", message: `${how} without finishing. Its log ends with:\n${logs.tail(rank) || logs.launcher.slice(-4000)}` };
  }

  private async handle(ctx: RunContext, msg: TrainerEvent): Promise<RunOutcome | undefined> {
    const { client, spec } = ctx;
    const id = spec.job.id;
    switch (msg.type) {
      case "started":
        await client.events(id, [{ message: `Training on ${msg.processes} processes`, data: { processes: msg.processes, sharding: msg.sharding } }]);
        return undefined;
      case "metrics": {
        const progress = { step: msg.step, total_steps: msg.total_steps, steps_per_second: Number(msg.steps_per_second ?? 0) };
        ctx.setProgress(progress);
        const data: Record<string, unknown> = { ...msg };
        delete data.type;
        const loss = typeof msg.train_loss === "number" ? msg.train_loss.toFixed(4) : "?";
        await client.events(id, [{ type: "metrics", message: `Step ${msg.step}/${msg.total_steps}: training loss=${loss}`, data }], progress);
        return undefined;
      }
      case "checkpoint":
        // A cancelled job needs no checkpoint; a paused one resumes from this.
        if (ctx.signal.reason === "cancel") return undefined;
        await uploadDir(client, id, "checkpoint", msg.step, msg.dir, msg.files);
        await client.checkpoint(id, { step: msg.step, epoch: msg.epoch, metrics: msg.metrics as Record<string, number>, files: msg.files });
        return undefined;
      case "done":
        await uploadDir(client, id, "final", 0, msg.adapter_dir, msg.files);
        return { kind: "succeeded", trainedTokens: msg.trained_tokens, files: msg.files };
      case "stopped":
        return { kind: "stopped" };
      default:
        return undefined;
    }
  }
}
