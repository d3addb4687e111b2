// The engine proper, run inside the session worker: one InferenceSession per base model, the KV
// cache and the adapters. step() splits a request into the batch shapes GroupQueryAttention
// accepts: fresh prompts together (right-padded, no past), single-token continuations together
// (S=1), and each multi-token continuation after a past alone (B=1).
import * as ort from "onnxruntime-node";
import { convertModel } from "./convert.js";
import type { WeightMode } from "./graph-builder.js";
import { KvCache, type AppendRow } from "./kv-cache.js";
import { loadAdapter, loraFeeds, type Adapter, type LoraFeed } from "./lora.js";
import { ropeCaches, type ModelConfig } from "./model-config.js";

export interface EngineOptions {
  cacheDir: string;
  mode?: WeightMode;
  threads?: number;
  maxAdapters?: number;
  /** ORT's session.intra_op.allow_spinning: pool threads spin between ops instead of sleeping
   *  (SmolLM2 int4, 2 threads: +12-13% tok/s for 1 and 8 streams); they spin only briefly once
   *  idle (33 ms of CPU in 3 s idle after a burst of steps). Default true. */
  spinning?: boolean;
}

export interface AdapterStats {
  readonly bytes: number;
  readonly loaded: number;
  readonly loads: number;
  readonly evictions: number;
}

export interface StepItem {
  seq: number;
  tokens: Int32Array;
  adapter: string | null;
}

// Fresh prompts are batched up to this many padded tokens (B*S).
const PREFILL_TOKENS = 4096;
const PREFILL_ROWS = 16;

interface Row {
  index: number; // position in the caller's items
  seq: number;
  tokens: Int32Array;
  adapter: Adapter | null;
  adapterKey: string | null;
}

export class Engine {
  private readonly adapters = new Map<string, Adapter>();
  /** Adapters read from disk and dropped by the LRU since the engine opened (for /metrics). */
  private adapterLoads = 0;
  private adapterEvictions = 0;
  private readonly kv: KvCache;
  private loraCache: { key: string; feeds: Record<string, ort.Tensor>; stacked: Float32Array[] } | undefined;
  /** Layers output packed q|k|v before RoPE (graph-builder): the cos/sin tables to rotate k with. */
  private readonly rope: { cos: Float32Array; sin: Float32Array } | undefined;
  private keys = new Float32Array(0);
  private values = new Float32Array(0);

  private constructor(
    private readonly session: ort.InferenceSession,
    readonly config: ModelConfig,
    private readonly maxAdapters: number,
  ) {
    this.kv = new KvCache(config.layers, config.kvHeads, config.headDim, config.contextLength);
    this.rope = session.outputNames.includes("new_qkv.0") ? ropeCaches(config) : undefined;
  }

  static async open(modelDir: string, opts: EngineOptions, onConvertLayer?: (done: number, total: number) => void): Promise<Engine> {
    const { onnxPath, config } = await convertModel(modelDir, opts.cacheDir, opts.mode ?? "int4", onConvertLayer);
    const session = await ort.InferenceSession.create(onnxPath, {
      intraOpNumThreads: opts.threads ?? 2,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
      extra: { session: { intra_op: { allow_spinning: opts.spinning === false ? "0" : "1" } } },
    });
    return new Engine(session, config, opts.maxAdapters ?? 64);
  }

  get adapterStats(): AdapterStats {
    let bytes = 0;
    for (const a of this.adapters.values()) bytes += a.bytes;
    return { bytes, loaded: this.adapters.size, loads: this.adapterLoads, evictions: this.adapterEvictions };
  }

  async loadAdapter(key: string, dir: string): Promise<void> {
    const existing = this.adapters.get(key);
    if (existing) {
      this.adapters.delete(key); // re-insert: most recently used
      this.adapters.set(key, existing);
      return;
    }
    const adapter = await loadAdapter(dir, this.config);
    this.adapters.set(key, adapter);
    this.adapterLoads++;
    while (this.adapters.size > this.maxAdapters) {
      this.unloadAdapter(this.adapters.keys().next().value!);
      this.adapterEvictions++;
    }
  }

  unloadAdapter(key: string): void {
    this.adapters.delete(key);
    this.loraCache = undefined;
  }

  private resolve(items: StepItem[]): Row[] {
    const seen = new Set<number>();
    return items.map((item, index) => {
      if (seen.has(item.seq)) throw new Error(`sequence ${item.seq} appears twice in one step`);
      seen.add(item.seq);
      if (item.tokens.length === 0) throw new Error(`sequence ${item.seq}: no tokens to step`);
      for (const t of item.tokens) if (t < 0 || t >= this.config.vocab) throw new Error(`sequence ${item.seq}: token id ${t} is outside the vocabulary (${this.config.vocab})`);
      const total = this.kv.length(item.seq) + item.tokens.length;
      if (total > this.config.contextLength) throw new Error(`sequence ${item.seq}: ${total} tokens exceed the context length ${this.config.contextLength}`);
      let adapter: Adapter | null = null;
      if (item.adapter !== null) {
        const a = this.adapters.get(item.adapter);
        if (!a) throw new Error(`unknown adapter "${item.adapter}" (not loaded, or evicted: call loadAdapter first)`);
        this.adapters.delete(item.adapter);
        this.adapters.set(item.adapter, a);
        adapter = a;
      }
      return { index, seq: item.seq, tokens: item.tokens, adapter, adapterKey: item.adapter };
    });
  }

  async step(items: StepItem[]): Promise<Float32Array[]> {
    const rows = this.resolve(items);
    const out: Float32Array[] = new Array<Float32Array>(items.length);
    const fresh = rows.filter((r) => !this.kv.has(r.seq));
    const decode = rows.filter((r) => this.kv.has(r.seq) && r.tokens.length === 1);
    const chunks = rows.filter((r) => this.kv.has(r.seq) && r.tokens.length > 1);
    let batch: Row[] = [];
    let width = 0;
    for (const r of fresh) {
      const w = Math.max(width, r.tokens.length);
      if (batch.length > 0 && (batch.length >= PREFILL_ROWS || w * (batch.length + 1) > PREFILL_TOKENS)) {
        await this.runFresh(batch, out);
        batch = [];
      }
      batch.push(r);
      width = batch.length === 1 ? r.tokens.length : w;
    }
    if (batch.length > 0) await this.runFresh(batch, out);
    if (decode.length > 0) await this.runContinue(decode, out);
    for (const r of chunks) await this.runContinue([r], out);
    return out;
  }

  private async runFresh(rows: Row[], out: Float32Array[]): Promise<void> {
    const { kvHeads, headDim } = this.config;
    const S = Math.max(...rows.map((r) => r.tokens.length));
    this.kv.ensureCapacity(S);
    const slots = rows.map((r) => this.kv.allocate(r.seq));
    const empty = new Float32Array(0);
    const past = (_l: number) => ({ k: empty, v: empty, dims: [rows.length, kvHeads, 0, headDim] });
    try {
      await this.run(rows, S, rows.map(() => 0), past, slots, out);
    } catch (err) {
      for (const r of rows) this.kv.free(r.seq);
      throw err;
    }
  }

  private async runContinue(rows: Row[], out: Float32Array[]): Promise<void> {
    const { kvHeads, headDim } = this.config;
    const S = Math.max(...rows.map((r) => r.tokens.length));
    this.kv.ensureCapacity(Math.max(...rows.map((r) => this.kv.length(r.seq) + r.tokens.length)));
    // GQA reads row b's past from batch row b, so the batch is laid out in slot order.
    let first: number;
    if (rows.length === 1) {
      first = this.kv.slot(rows[0]!.seq);
    } else {
      const order = this.kv.compact(rows.map((r) => r.seq));
      const bySeq = new Map(rows.map((r) => [r.seq, r]));
      rows = order.map((s) => bySeq.get(s)!);
      first = 0;
    }
    const pasts = rows.map((r) => this.kv.length(r.seq));
    const past = (l: number) => ({ ...this.kv.view(l, first, rows.length), dims: [rows.length, kvHeads, this.kv.capacity, headDim] });
    await this.run(rows, S, pasts, past, rows.map((_, i) => first + i), out);
  }

  private async run(
    rows: Row[], S: number, pasts: number[],
    past: (l: number) => { k: Float32Array; v: Float32Array; dims: number[] },
    slots: number[], out: Float32Array[],
  ): Promise<void> {
    const B = rows.length;
    const ids = new BigInt64Array(B * S);
    const pos = new BigInt64Array(B * S);
    const seqlens = new Int32Array(B);
    const last = new BigInt64Array(B);
    let total = 0;
    rows.forEach((r, b) => {
      const n = r.tokens.length;
      for (let s = 0; s < n; s++) {
        ids[b * S + s] = BigInt(r.tokens[s]!);
        pos[b * S + s] = BigInt(pasts[b]! + s);
      }
      seqlens[b] = pasts[b]! + n - 1;
      last[b] = BigInt(n - 1);
      total = Math.max(total, pasts[b]! + n);
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", ids, [B, S]),
      position_ids: new ort.Tensor("int64", pos, [B, S]),
      seqlens_k: new ort.Tensor("int32", seqlens, [B]),
      total_sequence_length: new ort.Tensor("int32", Int32Array.of(total), []),
      logits_idx: new ort.Tensor("int64", last, [B, 1]),
      // Without an adapter in the batch the graph takes its base branch, which skips the LoRA nodes.
      use_lora: new ort.Tensor("bool", [rows.some((r) => r.adapter !== null)], []),
      ...this.lora(rows),
    };
    for (let l = 0; l < this.config.layers; l++) {
      const p = past(l);
      feeds[`past_key.${l}`] = new ort.Tensor("float32", p.k, p.dims);
      feeds[`past_value.${l}`] = new ort.Tensor("float32", p.v, p.dims);
    }
    const result = await this.session.run(feeds);
    const appendRows: AppendRow[] = rows.map((r, b) => ({ slot: slots[b]!, past: pasts[b]!, count: r.tokens.length }));
    for (let l = 0; l < this.config.layers; l++) {
      if (this.rope) {
        const [k, v] = this.unpack(result[`new_qkv.${l}`]!.data as Float32Array, B * S, S, pasts);
        this.kv.append(l, appendRows, S, k, v);
      } else {
        this.kv.append(l, appendRows, S, result[`new_k.${l}`]!.data as Float32Array, result[`new_v.${l}`]!.data as Float32Array);
      }
    }
    const V = this.config.vocab;
    const logits = result.logits!.data as Float32Array;
    rows.forEach((r, b) => {
      this.kv.setLength(r.seq, pasts[b]! + r.tokens.length);
      out[r.index] = logits.slice(b * V, (b + 1) * V);
    });
  }

  /** k (rotated as GroupQueryAttention rotates it: rotate-half RoPE at position past + s) and v of
   *  `tokens` = B*S tokens of packed q|k|v, each (B,S,KVN*D). */
  private unpack(qkv: Float32Array, tokens: number, S: number, pasts: number[]): [Float32Array, Float32Array] {
    const { heads, kvHeads, headDim } = this.config;
    const width = kvHeads * headDim;
    const stride = (heads + 2 * kvHeads) * headDim;
    const half = headDim / 2;
    const { cos, sin } = this.rope!;
    if (this.keys.length < tokens * width) {
      this.keys = new Float32Array(tokens * width);
      this.values = new Float32Array(tokens * width);
    }
    const k = this.keys.subarray(0, tokens * width);
    const v = this.values.subarray(0, tokens * width);
    for (let t = 0; t < tokens; t++) {
      const src = t * stride + heads * headDim;
      v.set(qkv.subarray(src + width, src + 2 * width), t * width);
      const pos = pasts[Math.floor(t / S)]! + (t % S);
      for (let h = 0; h < kvHeads; h++) {
        const from = src + h * headDim;
        const to = t * width + h * headDim;
        for (let i = 0; i < half; i++) {
          const c = cos[pos * half + i]!;
          const sn = sin[pos * half + i]!;
          const x1 = qkv[from + i]!;
          const x2 = qkv[from + half + i]!;
          k[to + i] = x1 * c - x2 * sn;
          k[to + half + i] = x2 * c + x1 * sn;
        }
      }
    }
    return [k, v];
  }

  private lora(rows: Row[]): Record<string, ort.Tensor> {
    // Decode batches repeat the same composition step after step: reuse the stacked tensors.
    const key = rows.map((r) => r.adapterKey ?? "").join("\0");
    if (this.loraCache?.key === key) return this.loraCache.feeds;
    // A new composition restacks into the previous one's arrays where sizes match: fresh memory
    // costs page faults on every first touch (8 distinct adapters of SmolLM2: 152 MB per stack).
    const spare = new Map<number, Float32Array[]>();
    for (const a of this.loraCache?.stacked ?? []) {
      const same = spare.get(a.length);
      if (same) same.push(a);
      else spare.set(a.length, [a]);
    }
    const stacked: Float32Array[] = [];
    const alloc = (n: number) => {
      const reused = spare.get(n)?.pop();
      const a = reused ? reused.fill(0) : new Float32Array(n);
      stacked.push(a);
      return a;
    };
    this.loraCache = undefined;
    const feeds: Record<string, ort.Tensor> = {};
    const raw: Record<string, LoraFeed> = loraFeeds(this.config, rows.map((r) => r.adapter), alloc);
    for (const [name, f] of Object.entries(raw)) feeds[name] = new ort.Tensor("float32", f.data, f.dims);
    this.loraCache = { key, feeds, stacked };
    return feeds;
  }

  fork(src: number, dst: number): void {
    if (this.kv.has(dst)) throw new Error(`fork: sequence ${dst} already exists`);
    this.kv.fork(src, dst);
  }

  free(seq: number): void {
    this.kv.free(seq);
  }

  kvBytes(): number {
    return this.kv.bytes();
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
