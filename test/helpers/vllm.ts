// A real CPU vLLM (scripts/vllm-cpu.sh) on a tiny Llama for the vLLM-routed suites. scripts/test.sh
// starts one for the whole run and exports OPENFT_TEST_VLLM_URL and OPENFT_TEST_VLLM_MODEL (its
// model folder, named tiny-llama as openft's base model must be); a suite run on its own starts one.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ROOT } from "./server.js";
import { buildTinyModel } from "./tiny-weights.js";

export interface VllmReplica {
  readonly url: string;
  readonly port: number;

  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
  /** Starts it (again) on its port; settles once it answers /health. */
  start(): Promise<void>;
  /** The end of its output (for a failing test's message). */
  log(): string;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function waitReady(url: string, proc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 600_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`vLLM exited before it was ready:\n${log().slice(-4000)}`);
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) return;
    await sleep(500);
  }
  throw new Error(`vLLM was not ready within 10 minutes:\n${log().slice(-4000)}`);
}

/** A replica of our own (killed and restarted by the test that owns it): its port is chosen now,
 *  it runs once start() is called. `env` adds to its environment. */
export async function vllmReplica(modelDir: string, env: Record<string, string> = {}): Promise<VllmReplica> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let proc: ChildProcess | undefined;
  let log = "";
  const launch = async () => {
    // Its own process group: vLLM's engine runs in child processes, which a crash takes down too.
    proc = spawn("bash", [path.join(ROOT, "scripts/vllm-cpu.sh"), modelDir, String(port)], { detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, VLLM_CPU_KVCACHE_SPACE: "1", VLLM_DTYPE: "float32", ...env } });
    proc.stdout!.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
    proc.stderr!.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
    await waitReady(url, proc, () => log);
  };
  const kill = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((resolve) => p.once("exit", resolve));
    process.kill(-p.pid!, "SIGKILL");
    await gone;
    // The group's other processes (the engine core) go with the same signal; wait until the port
    // is free so a restart can bind it.
    while (await fetch(`${url}/health`).then(() => true, () => false)) await sleep(200);
  };
  process.once("exit", () => {
    try {
      if (proc) process.kill(-proc.pid!, "SIGKILL");
    } catch {
      // already gone
    }
  });
  return { url, port, kill, start: launch, log: () => log.slice(-4000) };
}

let shared: Promise<{ url: string; modelDir: string }> | undefined;
let ownShared: VllmReplica | undefined;

/** Stops the shared replica when this process started it (a suite run on its own): its output
 *  pipes would keep the test process alive. */
export async function stopSharedVllm(): Promise<void> {
  await ownShared?.kill();
}

/** The run's shared replica and its model folder. */
export function sharedVllm(): Promise<{ url: string; modelDir: string }> {
  shared ??= (async () => {
    const url = process.env.OPENFT_TEST_VLLM_URL;
    const modelDir = process.env.OPENFT_TEST_VLLM_MODEL;
    if (url && modelDir) return { url, modelDir };
    const dir = path.join(await fs.mkdtemp(path.join(os.tmpdir(), "openft-vllm-")), "tiny-llama");
    await buildTinyModel("llama-vllm", dir);
    ownShared = await vllmReplica(dir);
    await ownShared.start();
    return { url: ownShared.url, modelDir: dir };
  })();
  return shared;
}
