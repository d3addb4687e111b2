// One inference runtime and one scheduler per base model, opened on first use (the first open
// converts the weights into the ONNX cache). Fine-tunes of a base share its runtime: their
// adapters are loaded into it by key.
import path from "node:path";
import { openRuntime, type AdapterStats, type ModelRuntime, type WeightMode } from "../inference/runtime.js";
import { Scheduler } from "./scheduler.js";

export interface PoolOptions {
  readonly cacheDir: string;
  readonly mode: WeightMode;
  readonly threads: number;
  readonly spinning?: boolean;
  readonly maxBatch: number;
  readonly maxAdapters: number;
  /** Told the batch size of every engine step, with the base model's folder name. */
  readonly onStep?: (model: string, batchSize: number) => void;
}

/** What /metrics reports of one open base model. */
export interface ServedModelStats {
  readonly model: string;
  readonly queued: number;
  readonly load: number;
  readonly adapters: AdapterStats;
}

export interface ServedModel {
  readonly runtime: ModelRuntime;
  readonly scheduler: Scheduler;
}

export class ServingPool {
  private readonly models = new Map<string, Promise<ServedModel>>();
  private readonly opened = new Map<string, ServedModel>();

  constructor(private readonly opts: PoolOptions) {}

  /** The runtime of the base model folder `dir`. A failed open is forgotten so it can be retried. */
  model(dir: string): Promise<ServedModel> {
    let entry = this.models.get(dir);
    if (!entry) {
      entry = openRuntime(dir, { cacheDir: this.opts.cacheDir, mode: this.opts.mode, threads: this.opts.threads, spinning: this.opts.spinning, maxAdapters: this.opts.maxAdapters }).then(
        (runtime) => ({ runtime, scheduler: new Scheduler(runtime, this.opts.maxBatch, this.opts.onStep?.bind(null, path.basename(dir))) }),
      );
      this.models.set(dir, entry);
      entry.then((m) => this.models.get(dir) === entry && this.opened.set(dir, m), () => this.models.delete(dir));
    }
    return entry;
  }

  /** Every base model opened so far (one that is still opening is left out). */
  stats(): ServedModelStats[] {
    return [...this.opened].map(([dir, m]) => ({ model: path.basename(dir), queued: m.scheduler.queued, load: m.scheduler.load, adapters: m.runtime.adapterStats() }));
  }

  /** Drops an adapter from every open runtime (its model was deleted). */
  async unloadAdapter(key: string): Promise<void> {
    for (const entry of this.models.values()) {
      const m = await entry.catch(() => undefined);
      if (m) await m.runtime.unloadAdapter(key);
    }
  }

  async close(): Promise<void> {
    const all = [...this.models.values()];
    this.models.clear();
    this.opened.clear();
    for (const entry of all) {
      const m = await entry.catch(() => undefined);
      if (m) await m.runtime.close();
    }
  }
}
