// The kill soak's rig: the real server, a separate `openft worker` process and its trainer
// subprocess, each of which can be SIGKILLed, and the storage audit at the end (rows against
// blobs).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { APIConnectionError, APIConnectionTimeoutError } from "openai";
import { queryRows, visibleBlobs } from "./storage.js";
import { ROOT, type TestServer } from "./server.js";

/** Retries while the server is down (killed and restarting); other errors are real. */
export async function whileDown<T>(fn: () => Promise<T>, ms = 180_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const down = err instanceof APIConnectionError || err instanceof APIConnectionTimeoutError || (err as { status?: number }).status === 503;
      if (!down || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => p.once("exit", () => resolve()));
}

/** Pids of the processes whose parent is `ppid` (from /proc). */
async function children(ppid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === ppid) out.push(Number(name));
  }
  return out;
}

export class WorkerProcess {
  proc: ChildProcess | undefined;

  constructor(
    private readonly server: TestServer,
    private readonly token: string,
  ) {}

  start(): void {
    const workDir = path.join(this.server.dataDir, "worker-work");
    this.proc = spawn(process.execPath, [path.join(ROOT, "bin/openft.js"), "worker", "--api", this.server.url, "--token", this.token, "--models-dir", this.server.env.OPENFT_MODELS_DIR!, "--work-dir", workDir], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1", OPENFT_LOG_LEVEL: "warn" },
      stdio: ["ignore", "ignore", "inherit"],
    });
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const p = this.proc;
    if (!p) return;
    p.kill(signal);
    await exited(p);
  }

  /** The trainer subprocess's pid, waiting up to `ms` for one to run. */
  async trainer(ms: number): Promise<number | undefined> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const pid = this.proc?.pid;
      const [trainer] = pid === undefined ? [] : await children(pid);
      if (trainer !== undefined) return trainer;
      await sleep(100);
    }
    return undefined;
  }
}

export interface StorageAudit {
  readonly fileRows: number;
  /** File rows whose blob is missing. */
  readonly rowsWithoutBlob: string[];
  /** Blobs under files/ with no row, and artifact blobs under no checkpoint or model. */
  readonly blobsWithoutRow: string[];
  /** Files of live checkpoints and models that are missing. */
  readonly missingArtifacts: string[];
}

/** Compares rows with blobs. For PGlite the server must be stopped. */
export async function auditStorage(server: TestServer): Promise<StorageAudit> {
  const blobs = new Set(await visibleBlobs(server));
  const files = await queryRows(server, "select blob_key from files");
  const owners = await queryRows(
    server,
    "select blob_prefix, files, deleted_at from job_checkpoints union all select blob_prefix, files, deleted_at from models",
  );
  const prefixes = owners.map((o) => String(o.blob_prefix));
  const fileKeys = new Set(files.map((f) => String(f.blob_key)));
  const missingArtifacts = owners
    .filter((o) => o.deleted_at === null)
    .flatMap((o) => (o.files as string[]).map((f) => `${String(o.blob_prefix)}${f}`))
    .filter((k) => !blobs.has(k));
  return {
    fileRows: files.length,
    rowsWithoutBlob: [...fileKeys].filter((k) => !blobs.has(k)),
    blobsWithoutRow: [...blobs].filter((k) => (k.startsWith("files/") ? !fileKeys.has(k) : !prefixes.some((p) => k.startsWith(p)))),
    missingArtifacts,
  };
}
