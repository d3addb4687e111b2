// PEFT LoRA adapters as graph inputs (so one graph serves every adapter). At load, each module's lora_A
// [r,in] becomes A^T (in,r) and lora_B [out,r] becomes (scaling*B)^T (r,out). Projections that
// share their input (q/k/v, gate/up: GROUPS) share one A input, their A^T side by side at one rank
// per group (zero-padded), because one MatMul over them costs about half of one per projection.
// Per batch the engine stacks one adapter per row into (LB,in,members·r)/(LB,r,out), zero-padding
// ranks and zeroing rows that use the base model.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { GROUPS, groupName, hfModuleName, projectionDims, type Projection } from "./graph-builder.js";
import type { ModelConfig } from "./model-config.js";
import { transpose } from "./quant.js";
import { openWeights, readTensor } from "./safetensors.js";

interface LoraModule {
  rank: number;
  a: Float32Array; // (in, rank)
  b: Float32Array; // (rank, out), scaling folded in
}

/** One projection group of one layer: A^T of each member side by side, B per member. */
export interface LoraGroup {
  rank: number;
  a: Float32Array; // (in, members * rank), member i in columns [i*rank, (i+1)*rank)
  b: Float32Array[]; // per member (rank, out), scaling folded in; zeros for an untargeted member
}

export interface Adapter {
  /** keyed by `${layer}.${group}`; a group none of whose projections the adapter targets is absent */
  groups: Map<string, LoraGroup>;
  bytes: number;
}

export interface LoraFeed {
  dims: number[];
  data: Float32Array;
}

const KEY = /layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.lora_(A|B)(?:\.default)?\.weight$/;

interface AdapterConfig {
  r?: number;
  lora_alpha?: number;
  use_rslora?: boolean;
  use_dora?: boolean;
  alpha_pattern?: Record<string, number>;
}

export async function loadAdapter(dir: string, cfg: ModelConfig): Promise<Adapter> {
  let ac: AdapterConfig;
  try {
    ac = JSON.parse(await readFile(path.join(dir, "adapter_config.json"), "utf8")) as AdapterConfig;
  } catch (err) {
    throw new Error(`cannot read adapter_config.json in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (ac.use_dora) throw new Error(`adapter ${dir} uses DoRA, which is not supported`);
  const { tensors } = await openWeights(dir, "adapter_model.safetensors");
  const pairs = new Map<string, { a?: string; b?: string; l: number; proj: Projection }>();
  for (const name of tensors.keys()) {
    const m = KEY.exec(name);
    if (!m) throw new Error(`adapter ${dir}: unsupported tensor ${name} (only LoRA on q,k,v,o,gate,up,down projections)`);
    const l = Number(m[1]);
    if (l >= cfg.layers) throw new Error(`adapter ${dir}: ${name} targets layer ${l} but the base model has ${cfg.layers} layers`);
    const key = `${l}.${m[3]}`;
    const entry = pairs.get(key) ?? { l, proj: m[3] as Projection };
    entry[m[4] === "A" ? "a" : "b"] = name;
    pairs.set(key, entry);
  }
  if (pairs.size === 0) throw new Error(`adapter ${dir} has no LoRA tensors`);
  const modules = new Map<string, LoraModule>();
  let bytes = 0;
  for (const [key, { a, b, l, proj }] of pairs) {
    if (!a || !b) throw new Error(`adapter ${dir}: layer ${l} ${proj}_proj has lora_${a ? "B" : "A"} missing`);
    const [inDim, outDim] = projectionDims(cfg, proj);
    const sa = tensors.get(a)!.shape;
    const sb = tensors.get(b)!.shape;
    const rank = sa[0]!;
    if (sa.length !== 2 || sa[1] !== inDim || sb.length !== 2 || sb[0] !== outDim || sb[1] !== rank) {
      throw new Error(`adapter ${dir} does not fit the base model: ${hfModuleName(l, proj)} expects lora_A [r,${inDim}] and lora_B [${outDim},r], got [${sa}] and [${sb}]`);
    }
    const alphaKey = Object.keys(ac.alpha_pattern ?? {}).find((p) => hfModuleName(l, proj).endsWith(p));
    const alpha = alphaKey !== undefined ? ac.alpha_pattern![alphaKey]! : (ac.lora_alpha ?? ac.r ?? rank);
    const scaling = ac.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank;
    const bt = transpose(await readTensor(tensors.get(b)!), outDim, rank);
    for (let i = 0; i < bt.length; i++) bt[i] = bt[i]! * scaling;
    const mod = { rank, a: transpose(await readTensor(tensors.get(a)!), rank, inDim), b: bt };
    modules.set(key, mod);
  }
  const groups = new Map<string, LoraGroup>();
  for (let l = 0; l < cfg.layers; l++) {
    for (const projs of GROUPS) {
      const mods = projs.map((p) => modules.get(`${l}.${p}`));
      const rank = Math.max(0, ...mods.map((m) => m?.rank ?? 0));
      if (rank === 0) continue;
      const inDim = projectionDims(cfg, projs[0]!)[0];
      const width = projs.length * rank;
      const a = new Float32Array(inDim * width);
      const b = projs.map((p, i) => {
        const outDim = projectionDims(cfg, p)[1];
        const out = new Float32Array(rank * outDim);
        const m = mods[i];
        if (!m) return out;
        for (let x = 0; x < inDim; x++) a.set(m.a.subarray(x * m.rank, (x + 1) * m.rank), x * width + i * rank);
        out.set(m.b); // rows beyond m.rank stay zero
        return out;
      });
      groups.set(`${l}.${groupName(projs)}`, { rank, a, b });
      bytes += (a.length + b.reduce((n, x) => n + x.length, 0)) * 4;
    }
  }
  return { groups, bytes };
}

const EMPTY = new Float32Array(0);

/** The lora.{l}.{group}.A and lora.{l}.{proj}.B feeds for a batch whose row i uses rows[i] (null =
 *  base model). Stacked arrays come from `alloc`, which must return zeroed arrays. */
export function loraFeeds(cfg: ModelConfig, rows: (Adapter | null)[], alloc: (n: number) => Float32Array = (n) => new Float32Array(n)): Record<string, LoraFeed> {
  const feeds: Record<string, LoraFeed> = {};
  const distinct = new Set(rows);
  for (let l = 0; l < cfg.layers; l++) {
    for (const projs of GROUPS) {
      const inDim = projectionDims(cfg, projs[0]!)[0];
      const name = groupName(projs);
      const key = `${l}.${name}`;
      const gs = rows.map((r) => r?.groups.get(key));
      const rank = Math.max(0, ...gs.map((g) => g?.rank ?? 0));
      const width = projs.length * rank;
      if (rank === 0) {
        feeds[`lora.${key}.A`] = { dims: [1, inDim, 0], data: EMPTY };
        for (const p of projs) feeds[`lora.${l}.${p}.B`] = { dims: [1, 0, projectionDims(cfg, p)[1]], data: EMPTY };
      } else if (distinct.size === 1) {
        // One adapter for the whole batch: broadcast its own arrays, no copy.
        const g = gs[0]!;
        feeds[`lora.${key}.A`] = { dims: [1, inDim, width], data: g.a };
        projs.forEach((p, i) => (feeds[`lora.${l}.${p}.B`] = { dims: [1, rank, projectionDims(cfg, p)[1]], data: g.b[i]! }));
      } else {
        const n = rows.length;
        const a = alloc(n * inDim * width);
        gs.forEach((g, row) => {
          if (!g) return;
          if (g.rank === rank) return a.set(g.a, row * inDim * width); // the same layout: one copy
          // member i's columns move from i*g.rank to i*rank; the extra columns stay zero
          for (let x = 0; x < inDim; x++) {
            for (let i = 0; i < projs.length; i++) {
              const from = x * projs.length * g.rank + i * g.rank;
              a.set(g.a.subarray(from, from + g.rank), (row * inDim + x) * width + i * rank);
            }
          }
        });
        feeds[`lora.${key}.A`] = { dims: [n, inDim, width], data: a };
        projs.forEach((p, i) => {
          const outDim = projectionDims(cfg, p)[1];
          const b = alloc(n * rank * outDim);
          gs.forEach((g, row) => g && b.set(g.b[i]!, row * rank * outDim)); // rows beyond g.rank stay zero
          feeds[`lora.${l}.${p}.B`] = { dims: [n, rank, outDim], data: b };
        });
      }
    }
  }
  return feeds;
}
