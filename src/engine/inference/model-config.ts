// The Llama-family shape read from config.json, and the RoPE cos/sin caches it implies.
import { readFile } from "node:fs/promises";
import path from "node:path";

type Json = Record<string, unknown>;

export interface ModelConfig {
  modelType: string;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  contextLength: number;
  rmsEps: number;
  tieEmbeddings: boolean;
  rope: { theta: number; type: string; params: Json };
}

const SUPPORTED = new Set(["llama", "mistral", "qwen2", "qwen3", "smollm", "smollm2", "smollm3"]);

function num(cfg: Json, key: string, fallback?: number): number {
  const v = cfg[key];
  if (typeof v === "number") return v;
  if (fallback !== undefined) return fallback;
  throw new Error(`config.json has no numeric ${key}`);
}

export async function readModelConfig(modelDir: string): Promise<{ config: ModelConfig; raw: string }> {
  const raw = await readFile(path.join(modelDir, "config.json"), "utf8").catch((err: Error) => {
    throw new Error(`cannot read ${path.join(modelDir, "config.json")}: ${err.message}`, { cause: err });
  });
  const cfg = JSON.parse(raw) as Json;
  const modelType = String(cfg.model_type ?? "");
  if (!SUPPORTED.has(modelType)) throw new Error(`unsupported model_type "${modelType}" (supported: ${[...SUPPORTED].join(", ")})`);
  if (cfg.hidden_act !== undefined && cfg.hidden_act !== "silu") throw new Error(`unsupported hidden_act ${String(cfg.hidden_act)}`);
  const hidden = num(cfg, "hidden_size");
  const heads = num(cfg, "num_attention_heads");
  // transformers 5 moved rope_theta/rope_scaling into rope_parameters; accept both spellings.
  const params: Json = { ...((cfg.rope_scaling as Json | null) ?? {}), ...((cfg.rope_parameters as Json | null) ?? {}) };
  const theta = typeof params.rope_theta === "number" ? params.rope_theta : num(cfg, "rope_theta", 10000);
  const type = String(params.rope_type ?? params.type ?? "default");
  const config: ModelConfig = {
    modelType,
    hidden,
    intermediate: num(cfg, "intermediate_size"),
    layers: num(cfg, "num_hidden_layers"),
    heads,
    kvHeads: num(cfg, "num_key_value_heads", heads),
    headDim: typeof cfg.head_dim === "number" ? cfg.head_dim : hidden / heads,
    vocab: num(cfg, "vocab_size"),
    contextLength: num(cfg, "max_position_embeddings", 2048),
    rmsEps: num(cfg, "rms_norm_eps", 1e-6),
    tieEmbeddings: cfg.tie_word_embeddings !== false,
    rope: { theta, type, params },
  };
  if (config.headDim % 16 !== 0) throw new Error(`head_dim ${config.headDim} is not a multiple of 16 (GroupQueryAttention on CPU requires it)`);
  return { config, raw };
}

/** Inverse frequencies in fp32 arithmetic, as transformers computes them (default, linear, llama3). */
export function inverseFrequencies(cfg: ModelConfig): Float32Array {
  const half = cfg.headDim / 2;
  const f = Math.fround;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(cfg.rope.theta, f((2 * i) / cfg.headDim))));
  const p = cfg.rope.params;
  const factor = typeof p.factor === "number" ? p.factor : 1;
  if (cfg.rope.type === "linear") {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / factor;
  } else if (cfg.rope.type === "llama3") {
    const low = Number(p.low_freq_factor ?? 1);
    const high = Number(p.high_freq_factor ?? 4);
    const oldCtx = Number(p.original_max_position_embeddings ?? 8192);
    const lowWavelen = oldCtx / low;
    const highWavelen = oldCtx / high;
    for (let i = 0; i < half; i++) {
      const freq = inv[i]!;
      const wavelen = (2 * Math.PI) / freq;
      if (wavelen < highWavelen) continue;
      if (wavelen > lowWavelen) {
        inv[i] = freq / factor;
        continue;
      }
      const smooth = (oldCtx / wavelen - low) / (high - low);
      inv[i] = (1 - smooth) * (freq / factor) + smooth * freq;
    }
  } else if (cfg.rope.type !== "default") {
    throw new Error(`unsupported rope type "${cfg.rope.type}" (supported: default, linear, llama3)`);
  }
  return inv;
}

/** (max_pos, head_dim/2) cos and sin caches for com.microsoft.RotaryEmbedding. */
export function ropeCaches(cfg: ModelConfig): { cos: Float32Array; sin: Float32Array } {
  const inv = inverseFrequencies(cfg);
  const half = inv.length;
  const cos = new Float32Array(cfg.contextLength * half);
  const sin = new Float32Array(cfg.contextLength * half);
  for (let pos = 0; pos < cfg.contextLength; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * inv[i]!);
      cos[pos * half + i] = Math.cos(angle);
      sin[pos * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
