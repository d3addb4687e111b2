// Starting a worker that runs the real trainer: the embedded one of `openft serve` (over
// loopback) and the one of `openft worker --api URL --token TOKEN`.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { projectRoot } from "../../project-root.js";
import path from "node:path";
import { promisify } from "node:util";
import type { Logger } from "pino";
import { ProtocolClient } from "./protocol-client.js";
import { TrainerRunner } from "./trainer-runner.js";
import { Worker } from "./worker.js";

export interface TrainerWorkerOptions {
  readonly apiUrl: string;
  readonly token: string;
  readonly modelsDir: string;
  readonly workDir: string;
  readonly python: string | undefined;
  readonly device: "auto" | "cpu" | "cuda";
  readonly processes: number | undefined;
  readonly sharding: "auto" | "none" | "fsdp";
  readonly log: Logger;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export function trainerPaths(python: string | undefined) {
  const root = projectRoot();
  const venv = path.join(root, ".venv", "bin", "python");
  return { python: python ?? (existsSync(venv) ? venv : "python3"), trainerPath: path.join(root, "src", "engine", "trainer") };
}

/** Whether the trainer and its requirements import; the reason when not. */
export async function trainerAvailable(
  python: string,
  trainerPath: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string | undefined> {
  try {
    await promisify(execFile)(python, ["-c", "import openft_trainer, torch, transformers, peft"], {
      env: { ...env, PYTHONPATH: trainerPath },
      timeout: 120_000,
    });
    return undefined;
  } catch (err) {
    return ((err as { stderr?: string }).stderr ?? (err as Error).message).trim().split("\n").slice(-1)[0];
  }
}

/** Whether `python` imports wandb, the package the trainer forwards job metrics with. */
export async function trainerHasWandb(python: string, env: Readonly<Record<string, string | undefined>>): Promise<boolean> {
  try {
    await promisify(execFile)(python, ["-c", "import wandb"], { env: { ...env }, timeout: 120_000 });
    return true;
  } catch {
    return false;
  }
}

export function startTrainerWorker(o: TrainerWorkerOptions): Worker {
  const { python, trainerPath } = trainerPaths(o.python);
  const worker = new Worker({
    client: new ProtocolClient(o.apiUrl, o.token),
    runner: new TrainerRunner({ python, trainerPath, modelsDir: o.modelsDir, workDir: o.workDir, device: o.device, processes: o.processes, sharding: o.sharding, env: o.env }),
    log: o.log,
  });
  worker.start();
  return worker;
}
