// PEFT LoRA adapters as graph inputs (onnx-serving-notes §6.4). At load, each module's lora_A
// [r,in] becomes A^T (in,r) and lora_B [out,r] becomes (scaling*B)^T (r,out); per batch the engine
// stacks one adapter per row into (LB,in,r)/(LB,r,out), zero-padding ranks and zeroing rows that
// use the base model.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { hfModuleName, PROJECTIONS, projectionDims, type Projection } from "./graph-builder.js";
import type { ModelConfig } from "./model-config.js";
import { transpose } from "./quant.js";
import { openWeights, readTensor } from "./safetensors.js";

export interface LoraModule {
  rank: number;
  a: Float32Array; // (in, rank)
  b: Float32Array; // (rank, out), scaling folded in
}

export interface Adapter {
  /** keyed by `${layer}.${proj}`; a module the adapter does not target is absent */
  modules: Map<string, LoraModule>;
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
    bytes += (mod.a.length + mod.b.length) * 4;
  }
  return { modules, bytes };
}

const EMPTY = new Float32Array(0);

/** The lora.{l}.{proj}.A/B feeds for a batch whose row i uses rows[i] (null = base model). */
export function loraFeeds(cfg: ModelConfig, rows: (Adapter | null)[]): Record<string, LoraFeed> {
  const feeds: Record<string, LoraFeed> = {};
  const distinct = new Set(rows);
  for (let l = 0; l < cfg.layers; l++) {
    for (const proj of PROJECTIONS) {
      const [inDim, outDim] = projectionDims(cfg, proj);
      const key = `${l}.${proj}`;
      const mods = rows.map((r) => r?.modules.get(key));
      const rank = Math.max(0, ...mods.map((m) => m?.rank ?? 0));
      let a: LoraFeed;
      let b: LoraFeed;
      if (rank === 0) {
        a = { dims: [1, inDim, 0], data: EMPTY };
        b = { dims: [1, 0, outDim], data: EMPTY };
      } else if (distinct.size === 1) {
        // One adapter for the whole batch: broadcast its own arrays, no copy.
        a = { dims: [1, inDim, rank], data: mods[0]!.a };
        b = { dims: [1, rank, outDim], data: mods[0]!.b };
      } else {
        const n = rows.length;
        a = { dims: [n, inDim, rank], data: new Float32Array(n * inDim * rank) };
        b = { dims: [n, rank, outDim], data: new Float32Array(n * rank * outDim) };
        mods.forEach((m, i) => {
          if (!m) return;
          for (let x = 0; x < inDim; x++) a.data.set(m.a.subarray(x * m.rank, (x + 1) * m.rank), (i * inDim + x) * rank);
          b.data.set(m.b, i * rank * outDim); // rows beyond m.rank stay zero
        });
      }
      feeds[`lora.${key}.A`] = a;
      feeds[`lora.${key}.B`] = b;
    }
  }
  return feeds;
}
