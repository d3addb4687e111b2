// The in-process backend: the ONNX runtime and continuous-batching scheduler of one base model
// (pool.ts), behind the ServingClient interface. Behaviour is the engine's own: the scheduler
// samples, seeds per choice, applies stops, and loads adapters right before the steps using them.
import { randomBytes } from "node:crypto";
import { loadChatTokenizer, type ChatTokenizer } from "../../jobs/validation/tokenizer.js";
import type { AdapterCache } from "./adapter-cache.js";
import { EventQueue } from "./event-queue.js";
import type { AdapterRef, GenerateRequest, GenerationEvent, ModelLimits, ServingClient } from "./index.js";
import type { ServedModel, ServingPool } from "./pool.js";

export class OnnxClient implements ServingClient {
  readonly backend = "onnx" as const;
  private served: ServedModel | undefined;
  private tok: Promise<ChatTokenizer> | undefined;

  constructor(
    private readonly pool: ServingPool,
    private readonly dir: string,
    private readonly adapters: AdapterCache,
  ) {}

  tokenizer(): Promise<ChatTokenizer> {
    // A failed load is forgotten, so a fixed model folder is picked up by the next request.
    this.tok ??= loadChatTokenizer(this.dir).catch((err: unknown) => {
      this.tok = undefined;
      throw err;
    });
    return this.tok;
  }

  async limits(): Promise<ModelLimits> {
    const { runtime } = await this.model();
    return { contextLength: runtime.contextLength, vocabSize: runtime.vocabSize };
  }

  get load(): number {
    return this.served?.scheduler.load ?? 0;
  }

  // Only unpacked here: the scheduler loads adapters right before the steps that use them, so a
  // request still waiting for its turn cannot push a running request's adapter out of the cache.
  async loadAdapter(ref: AdapterRef): Promise<void> {
    await this.adapters.unpack(ref);
  }

  async unloadAdapter(id: string): Promise<void> {
    await this.pool.unloadAdapter(id);
  }

  async health(): Promise<boolean> {
    return true;
  }

  generate(req: GenerateRequest): AsyncIterable<GenerationEvent> {
    const queue = new EventQueue<GenerationEvent>();
    void this.run(req, queue);
    return queue;
  }

  private async model(): Promise<ServedModel> {
    this.served ??= await this.pool.model(this.dir);
    return this.served;
  }

  private async run(req: GenerateRequest, queue: EventQueue<GenerationEvent>): Promise<void> {
    try {
      const [served, tokenizer] = await Promise.all([this.model(), this.tokenizer()]);
      const adapterDir = req.adapter ? await this.adapters.unpack(req.adapter) : undefined;
      await served.scheduler.generate({
        promptIds: req.promptIds, adapter: req.adapter?.id ?? null, ...(adapterDir ? { adapterDir } : {}), n: req.n, maxTokens: req.maxTokens,
        stopTokenIds: tokenizer.stopTokenIds, stops: req.stops, sampling: req.sampling,
        seed: req.seed ?? randomBytes(8).readBigUInt64BE(), decoder: tokenizer, signal: req.signal,
        onEvent: (e) => queue.push({ index: e.index, delta: e.delta, logprobs: e.logprobs, tokens: 1, ...(e.finish ? { finish: e.finish } : {}) }),
      });
      queue.end();
    } catch (err) {
      queue.end(err);
    }
  }
}
