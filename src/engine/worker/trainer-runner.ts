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
  /** The environment the trainer runs in (the caller's, from src/config.ts). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

type TrainerLine =
  | { type: "started"; total_steps: number }
  | { type: "metrics"; step: number; total_steps: number; steps_per_second?: number; [k: string]: unknown }
  | { type: "checkpoint"; step: number; epoch: number; dir: string; files: string[]; metrics: Record<string, number> }
  | { type: "done"; adapter_dir: string; files: string[]; trained_tokens: number }
  | { type: "stopped"; step: number }
  | { type: "error"; code: string; message: string };

const LOG_TAIL = 4000;

async function fetchTo(client: ProtocolClient, jobId: string, what: Parameters<ProtocolClient["download"]>[1], file: string) {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await pipeline(await client.download(jobId, what), createWriteStream(file));
}

async function uploadDir(client: ProtocolClient, jobId: string, kind: "checkpoint" | "final", step: number, dir: string, files: string[]) {
  for (const f of files) await client.upload(jobId, kind, step, f, createReadStream(path.join(dir, f)));
}

export class TrainerRunner implements Runner {
  constructor(private readonly opts: TrainerRunnerOptions) {}

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
    };
    await fs.writeFile(file, JSON.stringify(body, null, 2));
    return file;
  }

  async run(ctx: RunContext): Promise<RunOutcome> {
    const dir = path.join(this.opts.workDir, ctx.spec.job.id, `attempt-${ctx.spec.job.attempt}-${Date.now()}`);
    await fs.mkdir(dir, { recursive: true });
    const specFile = await this.prepare(ctx, dir);
    const logFile = path.join(dir, "trainer.log");
    const log = createWriteStream(logFile);
    let tail = "";
    const child = spawn(this.opts.python, ["-m", "openft_trainer", specFile], {
      env: { ...this.opts.env, PYTHONPATH: this.opts.trainerPath, PYTHONUNBUFFERED: "1", HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stderr.on("data", (d: Buffer) => {
      log.write(d);
      tail = (tail + d.toString()).slice(-LOG_TAIL);
    });
    const onStop = () => child.kill("SIGTERM");
    ctx.signal.addEventListener("abort", onStop, { once: true });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("close", (code, signal) => resolve({ code, signal })));
    let outcome: RunOutcome | undefined;
    try {
      for await (const line of readline.createInterface({ input: child.stdout })) {
        if (!line.trim()) continue;
        log.write(`[stdout] ${line}\n`);
        let msg: TrainerLine;
        try {
          msg = JSON.parse(line) as TrainerLine;
        } catch {
          continue; // the protocol is JSON lines; anything else is noise for the log
        }
        outcome = (await this.handle(ctx, msg)) ?? outcome;
      }
    } finally {
      ctx.signal.removeEventListener("abort", onStop);
    }
    const { code, signal } = await exited;
    log.end();
    if (outcome) return outcome;
    if (ctx.signal.aborted) return { kind: "stopped" };
    // Killed by a signal nobody here sent (the OOM killer, an operator, a machine going down):
    // the machine's fault, not the job's, so the attempt is lost as if the worker had died.
    if (signal !== null) return { kind: "lost", reason: `the trainer was killed by ${signal}` };
    return { kind: "failed", code: "trainer_error", message: `The trainer exited with code ${code} without finishing. Its log ends with:\n${tail.trim()}` };
  }

  private async handle(ctx: RunContext, msg: TrainerLine): Promise<RunOutcome | undefined> {
    const { client, spec } = ctx;
    const id = spec.job.id;
    switch (msg.type) {
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
        await client.checkpoint(id, { step: msg.step, epoch: msg.epoch, metrics: msg.metrics, files: msg.files });
        return undefined;
      case "done":
        await uploadDir(client, id, "final", 0, msg.adapter_dir, msg.files);
        return { kind: "succeeded", trainedTokens: msg.trained_tokens, files: msg.files };
      case "stopped":
        return { kind: "stopped" };
      case "error":
        return { kind: "failed", code: msg.code, message: msg.message };
      default:
        return undefined;
    }
  }
}
