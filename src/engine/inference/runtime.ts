// Main-thread proxy of a base model's inference engine. The session, the KV cache and the adapters
// live in a worker thread (session-worker.ts) because session.run blocks its thread; logits come
// back as transferred Float32Arrays.
import { Worker } from "node:worker_threads";
import type { AdapterStats, StepItem } from "./engine.js";
import type { WeightMode } from "./graph-builder.js";
import type { Reply, Request, WorkerInit } from "./protocol.js";

export type { AdapterStats, StepItem } from "./engine.js";
export type { WeightMode } from "./graph-builder.js";

export interface OpenOptions {
  cacheDir: string;
  /** int4 = MatMulNBits block 32 accuracy_level 4 (default); fp32 = exact */
  mode?: WeightMode;
  /** ORT intra-op threads (default 2) */
  threads?: number;
  /** ORT's intra-op threads spin between ops rather than sleep (default true) */
  spinning?: boolean;
  /** adapters kept loaded, least recently used evicted first (default 64) */
  maxAdapters?: number;
}

export interface ModelRuntime {
  readonly vocabSize: number;
  readonly contextLength: number;
  loadAdapter(key: string, dir: string): Promise<void>;
  unloadAdapter(key: string): Promise<void>;
  step(items: StepItem[]): Promise<Float32Array[]>;
  fork(src: number, dst: number): Promise<void>;
  free(seq: number): void;
  close(): Promise<void>;
  memory(): { rssBytes: number; adapterBytes: number };
  /** As of the last reply from the engine's thread. */
  adapterStats(): AdapterStats;
}

type RequestBody = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;

class WorkerRuntime implements ModelRuntime {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private adapters: AdapterStats = { bytes: 0, loaded: 0, loads: 0, evictions: 0 };
  private dead: Error | undefined;

  constructor(
    private readonly worker: Worker,
    readonly vocabSize: number,
    readonly contextLength: number,
  ) {
    worker.on("message", (reply: Reply) => {
      if (reply.type !== "result" && reply.type !== "error") return;
      const p = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.type === "error") return p?.reject(new Error(reply.message));
      this.adapters = reply.adapters;
      p?.resolve(reply.value);
    });
    const fail = (err: Error) => {
      this.dead ??= err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`inference worker exited (code ${code})`)));
  }

  private call<T>(body: RequestBody): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...body, id });
    });
  }

  loadAdapter(key: string, dir: string): Promise<void> {
    return this.call({ op: "loadAdapter", key, dir });
  }

  unloadAdapter(key: string): Promise<void> {
    return this.call({ op: "unloadAdapter", key });
  }

  step(items: StepItem[]): Promise<Float32Array[]> {
    return this.call({ op: "step", items });
  }

  fork(src: number, dst: number): Promise<void> {
    return this.call({ op: "fork", src, dst });
  }

  free(seq: number): void {
    // Fire and forget; the worker handles requests in order, so later steps see the slot freed.
    this.call({ op: "free", seq }).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.dead) return;
    await this.call({ op: "close" }).catch(() => undefined);
    await this.worker.terminate();
  }

  memory(): { rssBytes: number; adapterBytes: number } {
    return { rssBytes: process.memoryUsage.rss(), adapterBytes: this.adapters.bytes };
  }

  adapterStats(): AdapterStats {
    return this.adapters;
  }
}

/** A first conversion's progress, on a terminal only (logs and CI stay quiet). */
function showProgress(modelDir: string, mode: WeightMode | undefined, done: number, total: number): void {
  if (!process.stderr.isTTY) return;
  const end = done === total ? "\n" : "";
  process.stderr.write(`\rconverting ${modelDir} to ONNX (${mode ?? "int4"}, first use only): layer ${done}/${total}${end}`);
}

/** Converts the model folder on first use (cached under cacheDir) and starts its worker. */
export async function openRuntime(modelDir: string, opts: OpenOptions): Promise<ModelRuntime> {
  const init: WorkerInit = { modelDir, opts: { cacheDir: opts.cacheDir, mode: opts.mode ?? "int4", threads: opts.threads ?? 2, spinning: opts.spinning ?? true, maxAdapters: opts.maxAdapters ?? 64 } };
  const worker = new Worker(new URL("./session-worker.js", import.meta.url), { workerData: init });
  const ready = await new Promise<{ vocabSize: number; contextLength: number }>((resolve, reject) => {
    const onMessage = (reply: Reply) => {
      if (reply.type === "progress") return showProgress(modelDir, init.opts.mode, reply.done, reply.total);
      if (reply.type === "ready") resolve(reply);
      else if (reply.type === "fatal") reject(new Error(`cannot open ${modelDir}: ${reply.message}`));
      else return;
      worker.off("message", onMessage);
    };
    worker.on("message", onMessage);
    worker.once("error", reject);
    worker.once("exit", (code) => reject(new Error(`inference worker exited (code ${code}) while opening ${modelDir}`)));
  }).catch(async (err: Error) => {
    await worker.terminate();
    throw err;
  });
  return new WorkerRuntime(worker, ready.vocabSize, ready.contextLength);
}
