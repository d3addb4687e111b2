// The vLLM backend: an HTTP client of a pool of vLLM OpenAI servers (replicas) started with
// --enable-lora, serving one base model. Prompts are rendered and tokenized here, as in-process;
// vLLM samples and detokenizes. Each choice is its own vLLM request (n=1) with its own seed, so n
// choices of one seeded request differ from each other and repeat with the seed. Adapters are
// loaded per replica on first use (POST /v1/load_lora_adapter, from the shared adapter folder).
// What this hop costs (bench:serve, SmolLM2 on vLLM's CPU build, 2 cores, medians of 3, 2026-12-05):
// one stream 24.1 tok/s through openft vs 25.0 straight to vLLM's chat API (0.96x), TTFT +3.8 ms;
// eight streams 143.8 vs 140.8 tok/s (1.02x), TTFT -12.1 ms. Tokenizing here and sending ids
// costs vLLM no more than its own chat template and tokenizer do.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { loadChatTokenizer, type ChatTokenizer } from "../../jobs/validation/tokenizer.js";
import type { AdapterCache } from "./adapter-cache.js";
import { ServingError } from "./errors.js";
import { EventQueue } from "./event-queue.js";
import type { AdapterRef, BackendStats, GenerateRequest, GenerationEvent, ModelLimits, ServingClient } from "./index.js";
import { choiceSeed } from "./sampler.js";
import { ReplicaDown, ReplicaSet, reach, type Replica } from "./vllm-replicas.js";
import { chunkLogprobs, completionBody, responseError, sseData } from "./vllm-wire.js";

export interface VllmPoolOptions {
  /** How often a replica that is down is probed. */
  readonly probeMs: number;
}

const json = (body: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

export class VllmClient implements ServingClient {
  readonly backend = "vllm" as const;
  private readonly pool: ReplicaSet;
  private tok: Promise<ChatTokenizer> | undefined;
  private limitsOnce: Promise<ModelLimits> | undefined;
  private active = 0;
  private loads = 0;

  constructor(
    private readonly base: string,
    private readonly dir: string,
    urls: readonly string[],
    private readonly adapters: AdapterCache,
    opts: Partial<VllmPoolOptions> = {},
  ) {
    this.pool = new ReplicaSet(urls, opts.probeMs ?? 1000);
  }

  get load(): number {
    return this.active;
  }

  tokenizer(): Promise<ChatTokenizer> {
    this.tok ??= loadChatTokenizer(this.dir).catch((err: unknown) => {
      this.tok = undefined;
      throw err;
    });
    return this.tok;
  }

  limits(): Promise<ModelLimits> {
    this.limitsOnce ??= this.readLimits().catch((err: unknown) => {
      this.limitsOnce = undefined;
      throw err;
    });
    return this.limitsOnce;
  }

  async loadAdapter(ref: AdapterRef): Promise<void> {
    await this.adapters.unpack(ref);
  }

  async unloadAdapter(id: string): Promise<void> {
    await Promise.all(this.pool.replicas.map(async (r) => {
      if (!r.loaded.delete(id)) return;
      await reach(r, "/v1/unload_lora_adapter", json({ lora_name: id })).catch(() => undefined);
    }));
  }

  /** What /metrics reports: requests in flight at the pool (vLLM's own queue is its business),
   *  adapters loaded on up replicas and loads done (vLLM evicts by --max-cpu-loras unseen). */
  stats(): BackendStats {
    const loaded = new Set(this.pool.replicas.filter((r) => r.up).flatMap((r) => [...r.loaded.keys()]));
    return { backend: "vllm", model: this.base, queued: this.active, adapters: { loaded: loaded.size, loads: this.loads, evictions: 0 } };
  }

  async health(): Promise<boolean> {
    return this.pool.anyUp();
  }

  close(): void {
    this.pool.close();
  }

  generate(req: GenerateRequest): AsyncIterable<GenerationEvent> {
    const queue = new EventQueue<GenerationEvent>();
    this.active += req.n;
    void this.run(req, queue).then(() => queue.end(), (err: unknown) => queue.end(err)).finally(() => (this.active -= req.n));
    return queue;
  }

  private async readLimits(): Promise<ModelLimits> {
    const config = JSON.parse(await readFile(path.join(this.dir, "config.json"), "utf8")) as { vocab_size?: number };
    const res = await this.send(0, (r) => reach(r, "/v1/models", { signal: AbortSignal.timeout(10_000) }));
    const models = (await res.json()) as { data: { id: string; max_model_len?: number }[] };
    const m = models.data.find((x) => x.id === this.base);
    if (!m?.max_model_len) throw new ServingError("unavailable", `The serving pool of '${this.base}' does not serve that model.`);
    return { contextLength: m.max_model_len, vocabSize: config.vocab_size ?? Number.MAX_SAFE_INTEGER };
  }

  /** `attempt` on one up replica after another until one answers (a refused connection moves on).
   *  The chosen replica counts `weight` sequences in flight from the pick on (the caller returns
   *  them), so requests arriving together spread over the replicas. */
  private async send<T>(weight: number, attempt: (r: Replica) => Promise<T>): Promise<T> {
    const tried = new Set<Replica>();
    for (let r = this.pool.pick(tried); r; r = this.pool.pick(tried)) {
      tried.add(r);
      r.inflight += weight;
      try {
        return await attempt(r);
      } catch (err) {
        r.inflight -= weight;
        if (!(err instanceof ReplicaDown)) throw err;
        this.pool.markDown(r);
      }
    }
    throw new ServingError("unavailable", `No replica of the serving pool of '${this.base}' is reachable; please retry shortly.`);
  }

  private async ensureAdapter(r: Replica, ref: AdapterRef): Promise<void> {
    let entry = r.loaded.get(ref.id);
    if (!entry) {
      entry = this.adapters.unpack(ref).then(async (dir) => {
        const res = await reach(r, "/v1/load_lora_adapter", json({ lora_name: ref.id, lora_path: dir }));
        const text = await res.text();
        // 404: runtime loading is off (the replica uses the filesystem resolver, which loads the
        // same folder by name on first request); "already been loaded": another openft did it.
        if (res.ok || res.status === 404 || /already been loaded/i.test(text)) {
          this.loads += 1;
          return;
        }
        throw new ServingError("failed", `The serving engine could not load the adapter of '${ref.id}' (${res.status}).`);
      });
      r.loaded.set(ref.id, entry);
      entry.catch(() => r.loaded.delete(ref.id));
    }
    await entry;
  }

  /** Opens one vLLM stream per choice on one replica, then feeds their events to `queue`. */
  private async run(req: GenerateRequest, queue: EventQueue<GenerationEvent>): Promise<void> {
    const stopSet = (await this.tokenizer()).stopTokenIds;
    const stopIds = [...stopSet];
    // One choice failing ends its siblings' streams too.
    const own = new AbortController();
    const signal = AbortSignal.any([req.signal, own.signal]);
    const open = async (r: Replica, reloaded: boolean): Promise<Response[]> => {
      if (req.adapter) await this.ensureAdapter(r, req.adapter);
      const bodies = Array.from({ length: req.n }, (_, i) =>
        completionBody(req.adapter?.id ?? this.base, req, req.seed === null ? undefined : Number(choiceSeed(req.seed, i) % 2_147_483_647n), stopIds));
      const responses = await Promise.all(bodies.map((b) => reach(r, "/v1/completions", { ...json(b), signal })));
      const bad = responses.find((res) => !res.ok);
      if (!bad) return responses;
      for (const res of responses) if (res !== bad) await res.body?.cancel();
      // 404: the replica does not know the adapter (it restarted since it loaded it): load again.
      if (bad.status === 404 && req.adapter && !reloaded) {
        r.loaded.delete(req.adapter.id);
        return open(r, true);
      }
      throw await responseError(bad);
    };
    let replica!: Replica;
    const streams = await this.send(req.n, (r) => {
      replica = r;
      return open(r, false);
    });
    try {
      await Promise.all(streams.map((res, index) => this.pump(res, index, req, queue, replica, stopSet).catch((err: unknown) => {
        own.abort(err);
        throw err;
      })));
    } finally {
      replica.inflight -= req.n;
    }
  }

  /** One choice's stream: text and logprobs as they come; the finish once usage has counted it. */
  private async pump(res: Response, index: number, req: GenerateRequest, queue: EventQueue<GenerationEvent>, replica: Replica, stopIds: ReadonlySet<number>): Promise<void> {
    let last: Omit<GenerationEvent, "tokens"> | undefined;
    let tokens = 0;
    try {
      for await (const chunk of sseData(res.body!)) {
        if (chunk.error) throw new ServingError("failed", "The serving engine failed mid-response; please retry.");
        for (const c of chunk.choices ?? []) {
          const logprobs = chunkLogprobs(c.logprobs, req.sampling.topLogprobs);
          if (c.finish_reason === null) {
            if (c.text !== "" || logprobs.length > 0) queue.push({ index, delta: c.text, logprobs, tokens: 0 });
            continue;
          }
          if (c.finish_reason !== "stop" && c.finish_reason !== "length") throw new ServingError("failed", `The serving engine ended a choice with '${c.finish_reason}'; please retry.`);
          // The end-of-turn token has no logprob entry in-process (it is not content): same here.
          const kept = c.finish_reason === "stop" ? logprobs.filter((t) => !stopIds.has(t.id)) : logprobs;
          last = { index, delta: c.text, logprobs: kept, finish: c.finish_reason };
        }
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    } catch (err) {
      if (req.signal.aborted || err instanceof ServingError) throw err;
      // The connection broke off mid-response (the replica died): later requests go elsewhere.
      this.pool.markDown(replica);
      throw new ServingError("failed", "The serving engine's replica broke off the response; please retry.");
    }
    if (!last) throw new ServingError("failed", "The serving engine ended a choice without finishing it; please retry.");
    queue.push({ ...last, tokens });
  }
}
