// Builds the Llama-family decoder graph (Llama 2/3, Mistral, SmolLM, Qwen2 with q/k/v bias, Qwen3
// with q/k norms) and streams its weights into model.data. The op choices and their input
// conventions are those the onnxruntime-node CPU build was probed to run; the logits are checked
// against transformers in test/inference-engine.test.ts.
//
// Inputs:  input_ids, position_ids int64 (B,S); seqlens_k int32 (B); total_sequence_length int32 [];
//          logits_idx int64 (B,1); past_key.{l}/past_value.{l} f32 (B,KVN,P,D);
//          lora.{l}.{group}.A f32 (LB,in,members·r) (groups q_k_v, o, gate_up, down) and
//          lora.{l}.{proj}.B f32 (LB,r,out);
//          use_lora bool []: false runs the base-model branch, which does not read the lora inputs.
// Outputs: logits f32 (B,V) at each row's logits_idx; and per layer either new_qkv.{l} f32
//          (B,S,(N+2KVN)*D), the packed q|k|v of the new tokens before RoPE (GroupQueryAttention
//          rotates internally; the engine rotates k itself for its cache), or, for models with q/k
//          norms (Qwen3), new_k.{l}/new_v.{l} f32 (B,S,KVN*D), the rotated keys and the values.
// Projections that read the same input (q/k/v, gate/up) share one weight matrix (concatenated along
// `out`, then Split), and so do their LoRA A matrices. int4 weights carry zero points (quant.ts);
// in int4 mode the output head is 8-bit (int8MatMul).
import { DataType, type InitializerSpec, type NodeSpec, type ValueInfoSpec, type AttrValue } from "./onnx-proto.js";
import type { ModelConfig } from "./model-config.js";
import { ropeCaches } from "./model-config.js";
import { BLOCK, quantizeInt4, quantizeInt8, transpose } from "./quant.js";
import { readTensor, type TensorInfo } from "./safetensors.js";

export type WeightMode = "int4" | "fp32";
export const PROJECTIONS = ["q", "k", "v", "o", "gate", "up", "down"] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** Projections that read the same input: one weight matrix, and one LoRA A input, per group. */
export const GROUPS: readonly (readonly Projection[])[] = [["q", "k", "v"], ["o"], ["gate", "up"], ["down"]];
export const groupName = (projs: readonly Projection[]): string => projs.join("_");

/** Sink for initializer bytes: returns where in model.data they went. */
export interface DataSink {
  append(bytes: Uint8Array): Promise<{ offset: number; length: number }>;
  readonly location: string;
}

/** (in, out) of each projection. */
export function projectionDims(cfg: ModelConfig, proj: Projection): [number, number] {
  const q = cfg.heads * cfg.headDim;
  const kv = cfg.kvHeads * cfg.headDim;
  const dims: Record<Projection, [number, number]> = {
    q: [cfg.hidden, q], k: [cfg.hidden, kv], v: [cfg.hidden, kv], o: [q, cfg.hidden],
    gate: [cfg.hidden, cfg.intermediate], up: [cfg.hidden, cfg.intermediate], down: [cfg.intermediate, cfg.hidden],
  };
  return dims[proj];
}

export function hfModuleName(l: number, proj: Projection): string {
  const group = proj === "gate" || proj === "up" || proj === "down" ? "mlp" : "self_attn";
  return `model.layers.${l}.${group}.${proj}_proj`;
}

const bytesOf = (a: Float32Array | Uint8Array | BigInt64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export class GraphBuilder {
  nodes: NodeSpec[] = [];
  readonly inputs: ValueInfoSpec[] = [];
  outputs: ValueInfoSpec[] = [];
  readonly initializers: InitializerSpec[] = [];
  private count = 0;
  /** Initializers already written, by a key naming what they hold: both branches share them. */
  private readonly made = new Map<string, Promise<string[]>>();
  /** The branch being built: with the LoRA inputs ("lora"), or the base model alone ("base"). */
  private branch: "lora" | "base" = "lora";

  constructor(
    private readonly cfg: ModelConfig,
    private readonly tensors: Map<string, TensorInfo>,
    private readonly mode: WeightMode,
    private readonly sink: DataSink,
    /** Told after each decoder layer's weights are converted (a first conversion takes a while). */
    private readonly onLayer?: (done: number, total: number) => void,
  ) {}

  private op(op: string, inputs: string[], attrs?: Record<string, AttrValue>, opts: { domain?: string; outputs?: number } = {}): string[] {
    const name = `/${op}_${this.count++}`;
    const outputs = Array.from({ length: opts.outputs ?? 1 }, (_, i) => `${name}/out${i}`);
    this.nodes.push({ op, inputs, outputs, name, domain: opts.domain, attrs });
    return outputs;
  }

  /** Gives the value `from` (not consumed yet) the name `to`, e.g. a graph output's. */
  private rename(from: string, to: string): string {
    const node = this.nodes.findLast((n) => n.outputs.includes(from));
    if (!node || this.nodes.some((n) => n.inputs.includes(from))) throw new Error(`cannot rename ${from}`);
    node.outputs[node.outputs.indexOf(from)] = to;
    return to;
  }

  private one(op: string, inputs: string[], attrs?: Record<string, AttrValue>, domain?: string): string {
    return this.op(op, inputs, attrs, { domain })[0]!;
  }

  private async external(name: string, type: InitializerSpec["type"], dims: number[], data: Float32Array | Uint8Array): Promise<string> {
    const { offset, length } = await this.sink.append(bytesOf(data));
    this.initializers.push({ name, type, dims, external: { location: this.sink.location, offset, length } });
    return name;
  }

  /** The initializers `make` writes, written once however many branches use them. */
  private once(key: string, make: () => Promise<string[]>): Promise<string[]> {
    let p = this.made.get(key);
    if (!p) {
      p = make();
      this.made.set(key, p);
    }
    return p;
  }

  private constant(name: string, type: InitializerSpec["type"], dims: number[], raw: Uint8Array): string {
    if (!this.made.has(name)) {
      this.made.set(name, Promise.resolve([name]));
      this.initializers.push({ name, type, dims, raw });
    }
    return name;
  }

  private constInt64(name: string, values: number[]): string {
    return this.constant(name, DataType.INT64, [values.length], bytesOf(BigInt64Array.from(values.map(BigInt))));
  }

  private constFloat(name: string, value: number): string {
    return this.constant(name, DataType.FLOAT, [], bytesOf(Float32Array.of(value)));
  }

  /** A graph output's name inside the current branch (If branches may not reuse outer names). */
  private branchName(name: string): string {
    return `${this.branch}/${name}`;
  }

  private has(name: string): boolean {
    return this.tensors.has(name);
  }

  private async read(name: string, shape?: number[]): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new Error(`weights have no tensor ${name}`);
    if (shape && info.shape.join() !== shape.join()) throw new Error(`tensor ${name} has shape [${info.shape}], expected [${shape}]`);
    return readTensor(info);
  }

  private input(name: string, type: ValueInfoSpec["type"], dims: (number | string)[]): string {
    if (!this.inputs.some((i) => i.name === name)) this.inputs.push({ name, type, dims });
    return name;
  }

  /** The int4 weight of one matrix [outDim, inDim] as MatMulNBits' B, scales and zero points. */
  private async int4(name: string, w: Float32Array, outDim: number, inDim: number): Promise<string[]> {
    const q = quantizeInt4(w, outDim, inDim);
    return [
      await this.external(`${name}.q4`, DataType.UINT8, [outDim, q.kBlocks, BLOCK / 2], q.packed),
      await this.external(`${name}.scales`, DataType.FLOAT, [outDim * q.kBlocks], q.scales),
      await this.external(`${name}.zp`, DataType.UINT8, [q.zeroPoints.length], q.zeroPoints),
    ];
  }

  /** The 8-bit weight of one matrix [outDim, inDim]: MatMulInteger's B [in, out] and per-column
   *  scales, divided by 127 here so that the graph multiplies by the activation's row max alone. */
  private async int8(name: string, w: Float32Array, outDim: number, inDim: number): Promise<string[]> {
    const { q, scales } = quantizeInt8(w, outDim, inDim);
    return [
      await this.external(`${name}.q8`, DataType.INT8, [inDim, outDim], new Uint8Array(q.buffer, q.byteOffset, q.byteLength)),
      await this.external(`${name}.s8`, DataType.FLOAT, [outDim], scales.map((v) => v / 127)),
    ];
  }

  /**
   * x @ W^T for 8-bit weights: each row of x is quantized on its own (scale max|row| / 127, held
   * as uint8 around 128), so a row's result never depends on the other rows of its batch; the
   * integer product is exact, then scaled back per row and per column. 12 nodes: worth it for the
   * output head alone (SmolLM2, 8 rows: 2.0 ms against 2.5 for 4-bit MatMulNBits in the profiled
   * graph; one row about 0.3 ms slower), not for the projections, where those nodes cost as much
   * as the kernel saves.
   */
  private int8MatMul(x: string, [q, scales]: string[]): string {
    const rowMax = this.one("Max", [this.one("ReduceMax", [this.one("Abs", [x])], { axes: [-1], keepdims: 1 }), this.constFloat("int8.tiny", 1e-30)]);
    // Activations on 7 bits (|xq - 64| <= 63): x86 CPUs without VNNI multiply u8 by s8 with
    // vpmaddubsw, whose 16-bit pair sums saturate above 32767 (2 x 255 x 127 does; 2 x 127 x 127
    // does not). With 8 bits the head was off by ~1.0 in logits on an AVX2-only EPYC.
    const scaled = this.one("Mul", [x, this.one("Div", [this.constFloat("int8.63", 63), rowMax])]);
    const xq = this.one("Cast", [this.one("Round", [this.one("Add", [scaled, this.constFloat("int8.64", 64)])])], { to: DataType.UINT8 });
    const zero = this.constant("int8.zero", DataType.UINT8, [], Uint8Array.of(64));
    const acc = this.one("Cast", [this.one("MatMulInteger", [xq, q!, zero])], { to: DataType.FLOAT });
    // scales carry the weights' max/127 and a 1/127 for the activations: put back 127/63.
    return this.one("Mul", [this.one("Mul", [acc, scales!]), this.one("Mul", [rowMax, this.constFloat("int8.127/63", 127 / 63)])]);
  }

  /**
   * x @ W^T (+ bias) (+ x @ A @ B for this layer's LoRA inputs) for projections that share their
   * input x: their weights are concatenated into one MatMulNBits (or MatMul), whose output is split
   * again, because one kernel call over the wider N costs much less than several small ones.
   */
  private async linear(x: string, l: number, projs: Projection[], opts: { split?: boolean } = {}): Promise<string[]> {
    const inDim = projectionDims(this.cfg, projs[0]!)[0];
    const outDims = projs.map((p) => projectionDims(this.cfg, p)[1]);
    const N = outDims.reduce((a, b) => a + b, 0);
    const name = projs.length === 1 ? hfModuleName(l, projs[0]!) : `model.layers.${l}.${projs.join("_")}`;
    const weights = await this.once(name, async () => {
      const w = new Float32Array(N * inDim);
      let row = 0;
      for (const [i, p] of projs.entries()) {
        w.set(await this.read(`${hfModuleName(l, p)}.weight`, [outDims[i]!, inDim]), row * inDim);
        row += outDims[i]!;
      }
      if (this.mode === "fp32") return [await this.external(`${name}.w`, DataType.FLOAT, [inDim, N], transpose(w, N, inDim))];
      return this.int4(name, w, N, inDim);
    });
    let y = this.mode === "fp32"
      ? this.one("MatMul", [x, ...weights])
      : this.one("MatMulNBits", [x, ...weights], { K: inDim, N, bits: 4, block_size: BLOCK, accuracy_level: 4 }, "com.microsoft");
    const biased = projs.map((p) => this.has(`${hfModuleName(l, p)}.bias`));
    if (biased.some(Boolean)) {
      const [bias] = await this.once(`${name}.b`, async () => {
        const b = new Float32Array(N);
        let at = 0;
        for (const [i, p] of projs.entries()) {
          if (biased[i]) b.set(await this.read(`${hfModuleName(l, p)}.bias`, [outDims[i]!]), at);
          at += outDims[i]!;
        }
        return [await this.external(`${name}.b`, DataType.FLOAT, [N], b)];
      });
      y = this.one("Add", [y, bias!]);
    }
    const split = (v: string) => (projs.length === 1 || opts.split === false ? [v] : this.op("Split", [v, this.constInt64(`${name}.split`, outDims)], { axis: -1 }, { outputs: projs.length }));
    if (this.branch === "base") return split(y);
    // LoRA: x @ A once per group (the members' A side by side, lora.ts), split into equal rank
    // slices, @ B per projection (per-row inputs); the deltas concatenated like the weights and
    // added before the split (one Add per group). fp16 A/B inputs were tried: slower here
    // (onnxruntime's CPU MatMul converts them), so they stay fp32.
    const g = groupName(projs);
    const a = this.input(`lora.${l}.${g}.A`, DataType.FLOAT, [`lb.${l}.${g}`, inDim, `r.${l}.${g}`]);
    const xa = this.one("MatMul", [x, a]);
    const slices = projs.length === 1 ? [xa] : this.op("Split", [xa], { axis: -1 }, { outputs: projs.length });
    const deltas = projs.map((p, i) => {
      const b = this.input(`lora.${l}.${p}.B`, DataType.FLOAT, [`lb.${l}.${p}`, `rb.${l}.${p}`, projectionDims(this.cfg, p)[1]]);
      return this.one("MatMul", [slices[i]!, b]);
    });
    const delta = deltas.length === 1 ? deltas[0]! : this.one("Concat", deltas, { axis: -1 });
    return split(this.one("Add", [y, delta]));
  }

  private async param(name: string, dims: number[]): Promise<string> {
    const [p] = await this.once(name, async () => [await this.external(name, DataType.FLOAT, dims, await this.read(name, dims))]);
    return p!;
  }

  private async norm(x: string, weight: string, dim: number): Promise<string> {
    const scale = await this.param(weight, [dim]);
    return this.one("SimplifiedLayerNormalization", [x, scale], { axis: -1, epsilon: { float: this.cfg.rmsEps } });
  }

  /** norm(x + skip) and the sum itself (the residual stream). */
  private async skipNorm(x: string, skip: string, weight: string): Promise<[string, string]> {
    const scale = await this.param(weight, [this.cfg.hidden]);
    const out = this.op("SkipSimplifiedLayerNormalization", [x, skip, scale], { epsilon: { float: this.cfg.rmsEps } }, { domain: "com.microsoft", outputs: 4 });
    // outputs 1 and 2 (mean, inv_std_var) are not wanted
    this.nodes.at(-1)!.outputs[1] = "";
    this.nodes.at(-1)!.outputs[2] = "";
    return [out[0]!, out[3]!];
  }

  /** Qwen3: RMSNorm over each head of x (B,S,N*D). */
  private async headNorm(x: string, weight: string, heads: number): Promise<string> {
    const d = this.cfg.headDim;
    const split = this.one("Reshape", [x, this.constInt64(`${weight}.shape`, [0, 0, heads, d])]);
    const normed = await this.norm(split, weight, d);
    return this.one("Reshape", [normed, this.constInt64(`${weight}.flat`, [0, 0, heads * d])]);
  }

  private async attention(x: string, l: number, cos: string, sin: string): Promise<string> {
    const { cfg } = this;
    const prefix = `model.layers.${l}.self_attn`;
    const pastDims = ["batch", cfg.kvHeads, "past", cfg.headDim];
    if (!this.has(`${prefix}.q_norm.weight`)) {
      // Packed q|k|v straight into GroupQueryAttention, which applies RoPE itself (positions from
      // seqlens_k): no Split, no RotaryEmbedding nodes. The packed tensor is also the layer's
      // output new_qkv.{l}; the engine takes k and v from it and rotates k for its cache.
      const [qkv] = await this.linear(x, l, ["q", "k", "v"], { split: false });
      const packed = this.rename(qkv!, this.branchName(`new_qkv.${l}`));
      this.outputs.push({ name: `new_qkv.${l}`, type: DataType.FLOAT, dims: ["batch", "seq", (cfg.heads + 2 * cfg.kvHeads) * cfg.headDim] });
      const pk = this.input(`past_key.${l}`, DataType.FLOAT, pastDims);
      const pv = this.input(`past_value.${l}`, DataType.FLOAT, pastDims);
      const [attn] = this.op("GroupQueryAttention", [packed, "", "", pk, pv, "seqlens_k", "total_sequence_length", cos, sin],
        { num_heads: cfg.heads, kv_num_heads: cfg.kvHeads, do_rotary: 1, rotary_interleaved: 0 }, { domain: "com.microsoft", outputs: 3 });
      return (await this.linear(attn!, l, ["o"]))[0]!;
    }
    let [q, k, v] = (await this.linear(x, l, ["q", "k", "v"])) as [string, string, string];
    if (this.has(`${prefix}.q_norm.weight`)) {
      q = await this.headNorm(q, `${prefix}.q_norm.weight`, cfg.heads);
      k = await this.headNorm(k, `${prefix}.k_norm.weight`, cfg.kvHeads);
    }
    q = this.one("RotaryEmbedding", [q, "position_ids", cos, sin], { num_heads: cfg.heads, interleaved: 0 }, "com.microsoft");
    // The rotated keys and the values are graph outputs under their own names (no Identity nodes).
    k = this.rename(this.one("RotaryEmbedding", [k, "position_ids", cos, sin], { num_heads: cfg.kvHeads, interleaved: 0 }, "com.microsoft"), this.branchName(`new_k.${l}`));
    v = this.rename(v, this.branchName(`new_v.${l}`));
    const kvDim = cfg.kvHeads * cfg.headDim;
    this.outputs.push({ name: `new_k.${l}`, type: DataType.FLOAT, dims: ["batch", "seq", kvDim] });
    this.outputs.push({ name: `new_v.${l}`, type: DataType.FLOAT, dims: ["batch", "seq", kvDim] });
    const pk = this.input(`past_key.${l}`, DataType.FLOAT, pastDims);
    const pv = this.input(`past_value.${l}`, DataType.FLOAT, pastDims);
    const [attn] = this.op("GroupQueryAttention", [q, k, v, pk, pv, "seqlens_k", "total_sequence_length"],
      { num_heads: cfg.heads, kv_num_heads: cfg.kvHeads, do_rotary: 0 }, { domain: "com.microsoft", outputs: 3 });
    return (await this.linear(attn!, l, ["o"]))[0]!;
  }

  private async mlp(x: string, l: number): Promise<string> {
    const [gate, up] = (await this.linear(x, l, ["gate", "up"])) as [string, string];
    const silu = this.one("Mul", [gate, this.one("Sigmoid", [gate])]);
    return (await this.linear(this.one("Mul", [silu, up]), l, ["down"]))[0]!;
  }

  /**
   * The graph is one If on `use_lora`: the "lora" branch reads the lora.* inputs, the "base" branch
   * is the same model without them. Both read the same initializers (ONNX Runtime keeps one copy,
   * measured), and a batch without adapters skips the LoRA nodes, ~28% of a decode step.
   */
  async build(): Promise<void> {
    this.input("use_lora", DataType.BOOL, []);
    const branches: Record<"lora" | "base", { nodes: NodeSpec[]; outputs: ValueInfoSpec[] }> = {
      lora: { nodes: [], outputs: [] },
      base: { nodes: [], outputs: [] },
    };
    for (const branch of ["lora", "base"] as const) {
      this.branch = branch;
      this.nodes = [];
      this.outputs = [];
      await this.body();
      branches[branch] = { nodes: this.nodes, outputs: this.outputs.map((o) => ({ ...o, name: this.branchName(o.name) })) };
    }
    this.outputs = branches.lora.outputs.map((o) => ({ ...o, name: o.name.slice("lora/".length) }));
    this.nodes = [{
      op: "If", inputs: ["use_lora"], outputs: this.outputs.map((o) => o.name), name: "/use_lora",
      attrs: {
        then_branch: { graph: { name: "lora", ...branches.lora } },
        else_branch: { graph: { name: "base", ...branches.base } },
      },
    }];
  }

  private async body(): Promise<void> {
    const { cfg } = this;
    this.input("input_ids", DataType.INT64, ["batch", "seq"]);
    this.input("position_ids", DataType.INT64, ["batch", "seq"]);
    this.input("seqlens_k", DataType.INT32, ["batch"]);
    this.input("total_sequence_length", DataType.INT32, []);
    this.input("logits_idx", DataType.INT64, ["batch", 1]);
    const [embed, cos, sin] = await this.once("embed+rope", async () => {
      const caches = ropeCaches(cfg);
      return [
        await this.external("embed", DataType.FLOAT, [cfg.vocab, cfg.hidden], await this.read("model.embed_tokens.weight", [cfg.vocab, cfg.hidden])),
        await this.external("rope.cos", DataType.FLOAT, [cfg.contextLength, cfg.headDim / 2], caches.cos),
        await this.external("rope.sin", DataType.FLOAT, [cfg.contextLength, cfg.headDim / 2], caches.sin),
      ];
    }) as [string, string, string];

    let residual = this.one("Gather", [embed, "input_ids"]);
    let x = await this.norm(residual, "model.layers.0.input_layernorm.weight", cfg.hidden);
    for (let l = 0; l < cfg.layers; l++) {
      const attn = await this.attention(x, l, cos, sin);
      [x, residual] = await this.skipNorm(attn, residual, `model.layers.${l}.post_attention_layernorm.weight`);
      const mlp = await this.mlp(x, l);
      const next = l + 1 < cfg.layers ? `model.layers.${l + 1}.input_layernorm.weight` : "model.norm.weight";
      [x, residual] = await this.skipNorm(mlp, residual, next);
      // The weights are converted once, in the first branch; the second reuses them.
      if (this.branch === "lora") this.onLayer?.(l + 1, cfg.layers);
    }
    const last = this.one("GatherND", [x, "logits_idx"], { batch_dims: 1 });
    await this.lmHead(last);
    this.outputs.unshift({ name: "logits", type: DataType.FLOAT, dims: ["batch", cfg.vocab] });
  }

  private async lmHead(last: string): Promise<void> {
    const { cfg } = this;
    const tied = !this.has("lm_head.weight");
    let logits: string;
    if (this.mode === "fp32") {
      // Gemm(transB=1) reads the [V,H] table as is, so a tied head shares the embedding initializer.
      const [w] = tied ? ["embed"] : await this.once("lm_head", async () => [await this.external("lm_head", DataType.FLOAT, [cfg.vocab, cfg.hidden], await this.read("lm_head.weight", [cfg.vocab, cfg.hidden]))]);
      logits = this.one("Gemm", [last, w!], { transB: 1 });
    } else {
      // The output head in 8 bits, as in llama.cpp's 4-bit GGUF files (SmolLM2's Q4_1 file keeps
      // its tied table in Q8_0): closer to fp32 than a 4-bit head, and faster on batches.
      const weights = await this.once("lm_head", async () => this.int8("lm_head", await this.read(tied ? "model.embed_tokens.weight" : "lm_head.weight", [cfg.vocab, cfg.hidden]), cfg.vocab, cfg.hidden));
      logits = this.int8MatMul(last, weights);
    }
    this.rename(logits, this.branchName("logits"));
  }
}
