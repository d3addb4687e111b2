// The serving seam, shaped like vLLM's EngineClient: the one interface the chat API talks to, and
// the router that picks a backend per base model (OPENFT_VLLM names the bases served by a vLLM
// pool; every other base runs on the in-process ONNX engine). The chat API imports nothing else
// from src/engine (a lint rule): validation and response formatting stay there, generation here.
import type { BlobStore } from "../../storage/blob-store.js";
import type { ChatTokenizer } from "../../jobs/validation/tokenizer.js";
import { AdapterCache } from "./adapter-cache.js";
import { OnnxClient } from "./onnx-client.js";
import { ServingPool, type PoolOptions } from "./pool.js";
import type { FinishReason, GeneratedToken } from "./scheduler.js";
import type { SamplingParams } from "./sampler.js";
import { VllmClient, type VllmPoolOptions } from "./vllm-client.js";

export type { ChatTokenizer, FinishReason, GeneratedToken, SamplingParams };
export type { TokenLogprob } from "./sampler.js";
export { ServingError, type ServingErrorKind } from "./errors.js";

export type BackendName = "onnx" | "vllm";

/** A fine-tune's adapter as stored: its files under a blob prefix. `id` is its ft: model name. */
export interface AdapterRef {
  readonly id: string;
  readonly blobPrefix: string;
  readonly files: readonly string[];
}

export interface GenerateRequest {
  readonly promptIds: readonly number[];
  readonly adapter: AdapterRef | null;
  readonly n: number;
  /** Most tokens per choice; the context length caps it as well. */
  readonly maxTokens: number;
  readonly stops: readonly string[];
  readonly sampling: SamplingParams;
  /** null: the caller gave none (each backend then seeds at random). */
  readonly seed: bigint | null;
  readonly signal: AbortSignal;
}

/** What one choice gained: text released, the logprobs of the tokens behind it, and how many
 *  tokens it took (usage adds these up); `finish` on its last event. */
export interface GenerationEvent {
  readonly index: number;
  readonly delta: string;
  readonly logprobs: readonly GeneratedToken[];
  readonly tokens: number;
  readonly finish?: FinishReason;
}

/** One base model on one backend, as /metrics reports it. */
export interface BackendStats {
  readonly backend: BackendName;
  readonly model: string;
  readonly queued: number;
  readonly adapters: { readonly loaded: number; readonly loads: number; readonly evictions: number };
}

export interface ModelLimits {
  readonly contextLength: number;
  readonly vocabSize: number;
}

/** One base model on one backend. */
export interface ServingClient {
  readonly backend: BackendName;
  /** The base model's tokenizer and chat template (both backends render prompts here, so a
   *  prompt is the same token ids whichever engine runs it). */
  tokenizer(): Promise<ChatTokenizer>;
  /** Context length and vocabulary, read once the backend is reachable. */
  limits(): Promise<ModelLimits>;
  /** Sequences queued or running here, for 429 decisions. */
  readonly load: number;
  /** The choices' events until every choice finished; throws ServingError (or an abort reason). */
  generate(req: GenerateRequest): AsyncIterable<GenerationEvent>;
  /** Makes the adapter available (downloaded, unpacked, loaded) before a request uses it. */
  loadAdapter(ref: AdapterRef): Promise<void>;
  /** Drops the adapter (its model was deleted); later requests for it must not be served. */
  unloadAdapter(id: string): Promise<void>;
  /** Whether the backend can serve now (for vLLM: at least one replica answers). */
  health(): Promise<boolean>;
}

export interface RouterOptions {
  readonly onnx: PoolOptions & { readonly adapterDir: string };
  /** Base model name → its vLLM pool. */
  readonly vllm: ReadonlyMap<string, readonly string[]>;
  readonly vllmAdapterDir: string;
  readonly vllmMaxLoraRank: number;
  readonly blobs: BlobStore;
  readonly vllmOptions?: Partial<VllmPoolOptions>;
}

export class ServingRouter {
  private readonly pool: ServingPool;
  private readonly clients = new Map<string, ServingClient>();
  private readonly onnxAdapters: AdapterCache;
  private readonly vllmAdapters: AdapterCache;

  constructor(private readonly opts: RouterOptions) {
    this.pool = new ServingPool(opts.onnx);
    this.onnxAdapters = new AdapterCache(opts.blobs, opts.onnx.adapterDir, "hash");
    // Named by model id: the folder a vLLM filesystem resolver would look up for that name.
    this.vllmAdapters = new AdapterCache(opts.blobs, opts.vllmAdapterDir, "id");
  }

  /** The client of base model `base` whose folder is `dir`. */
  client(base: string, dir: string): ServingClient {
    const key = `${base}\0${dir}`;
    let c = this.clients.get(key);
    if (!c) {
      const urls = this.opts.vllm.get(base);
      c = urls
        ? new VllmClient(base, dir, urls, this.vllmAdapters, this.opts.vllmOptions)
        : new OnnxClient(this.pool, dir, this.onnxAdapters);
      this.clients.set(key, c);
    }
    return c;
  }

  backendOf(base: string): BackendName {
    return this.opts.vllm.has(base) ? "vllm" : "onnx";
  }

  /** The largest LoRA rank the base's pool accepts; undefined: the in-process engine takes any. */
  maxLoraRank(base: string): number | undefined {
    return this.opts.vllm.has(base) ? this.opts.vllmMaxLoraRank : undefined;
  }

  /** Every base model served so far, on either backend. */
  stats(): BackendStats[] {
    const onnx = this.pool.stats().map((m): BackendStats => ({ backend: "onnx", model: m.model, queued: m.queued, adapters: m.adapters }));
    const vllm = [...this.clients.values()].flatMap((c) => (c instanceof VllmClient ? [c.stats()] : []));
    return [...onnx, ...vllm];
  }

  /** A deleted fine-tune: unloaded everywhere it may be loaded. */
  async unloadAdapter(id: string): Promise<void> {
    await Promise.all([...this.clients.values()].map((c) => c.unloadAdapter(id)));
    await Promise.all([this.onnxAdapters.remove(id), this.vllmAdapters.remove(id)]);
  }

  async close(): Promise<void> {
    for (const c of this.clients.values()) if (c instanceof VllmClient) c.close();
    await this.pool.close();
  }
}
