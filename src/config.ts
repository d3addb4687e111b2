// The only reader of process.env. loadConfig is pure: tests call it with a literal object.
import path from "node:path";
import { z } from "zod";

const bool = z
  .enum(["1", "0", "true", "false", "yes", "no"])
  .transform((v) => v === "1" || v === "true" || v === "yes");

const envSchema = z.object({
  OPENFT_HOST: z.string().min(1).default("127.0.0.1"),
  OPENFT_PORT: z.coerce.number().int().min(0).max(65535).default(8000),
  OPENFT_DATA_DIR: z.string().min(1).default("./data"),
  OPENFT_MODELS_DIR: z.string().min(1).default("./models"),
  OPENFT_API_KEY: z.string().min(8).optional(),
  OPENFT_MAX_UPLOAD_BYTES: z.coerce.number().int().positive().default(512 * 1024 * 1024),
  // An upload's lease: a pending upload whose lease lapses (its server died) is swept.
  OPENFT_UPLOAD_LEASE_SECONDS: z.coerce.number().positive().default(60),
  // The Uploads API: total size of one upload (OpenAI's limit is 8 GB) and how long a pending
  // upload lives (OpenAI: an hour) before it expires and its parts are swept.
  OPENFT_UPLOADS_MAX_BYTES: z.coerce.number().int().positive().default(8 * 1024 ** 3),
  OPENFT_UPLOADS_EXPIRY_SECONDS: z.coerce.number().int().positive().default(3600),
  // A worker's claim on a job lasts this long unless a heartbeat renews it.
  OPENFT_WORKER_LEASE_SECONDS: z.coerce.number().positive().default(60),
  // The embedded worker runs the trainer in this process's machine; off for API-only replicas.
  OPENFT_EMBEDDED_WORKER: bool.default(true),
  OPENFT_PYTHON: z.string().min(1).optional(),
  OPENFT_WORK_DIR: z.string().min(1).optional(),
  OPENFT_DEVICE: z.enum(["auto", "cpu", "cuda"]).default("auto"),
  // Job integrations (wandb): "auto" accepts them when the trainer's Python imports wandb; "on"
  // for API replicas whose remote workers have it; "off" refuses them.
  OPENFT_WANDB: z.enum(["auto", "on", "off"]).default("auto"),
  // Training processes per job (torchrun); default: one per visible CUDA device, 1 without CUDA.
  OPENFT_TRAIN_PROCESSES: z.coerce.number().int().min(1).max(64).optional(),
  // Several processes: data parallel (none), FSDP-sharded base (fsdp), or auto (FSDP when the
  // base does not fit one GPU; src/engine/trainer/openft_trainer/fsdp.py).
  OPENFT_TRAIN_SHARDING: z.enum(["auto", "none", "fsdp"]).default("auto"),
  OPENFT_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // Serving: weights as int4 (MatMulNBits, the default) or fp32 (exact); converted graphs are
  // cached under OPENFT_SERVING_CACHE_DIR (default <data dir>/serving).
  OPENFT_SERVING_MODE: z.enum(["int4", "fp32"]).default("int4"),
  OPENFT_SERVING_THREADS: z.coerce.number().int().min(1).max(256).default(2),
  // ONNX Runtime's worker threads spin between ops instead of sleeping (faster steps with more
  // than one thread; they spin only briefly once the model is idle). Off for a machine whose
  // other cores are busy with something else.
  OPENFT_SERVING_SPIN: bool.default(true),
  OPENFT_SERVING_MAX_BATCH: z.coerce.number().int().min(1).max(256).default(16),
  OPENFT_SERVING_MAX_QUEUE: z.coerce.number().int().min(1).default(256),
  OPENFT_SERVING_MAX_ADAPTERS: z.coerce.number().int().min(1).default(64),
  OPENFT_SERVING_CACHE_DIR: z.string().min(1).optional(),
  // GET /metrics: on by default; with a token, scrapers must send it as a bearer token.
  OPENFT_METRICS: bool.default(true),
  OPENFT_METRICS_TOKEN: z.string().min(8).optional(),
  // Base models served by vLLM pools: BASE=URL[|URL...] pairs, comma-separated (README).
  OPENFT_VLLM: z.string().optional(),
  // A folder the replicas can read: each adapter is unpacked into <dir>/<ft: model id>.
  OPENFT_VLLM_ADAPTER_DIR: z.string().min(1).optional(),
  // vLLM's --max-lora-rank of the pools (vLLM's own default is 16): higher ranks are refused at
  // job creation for their base models.
  OPENFT_VLLM_MAX_LORA_RANK: z.coerce.number().int().min(1).max(512).default(16),
  DATABASE_URL: z.string().url().optional(),
  OPENFT_S3_ENDPOINT: z.string().url().optional(),
  OPENFT_S3_BUCKET: z.string().min(3).optional(),
  OPENFT_S3_REGION: z.string().min(1).default("us-east-1"),
  OPENFT_S3_ACCESS_KEY_ID: z.string().optional(),
  OPENFT_S3_SECRET_ACCESS_KEY: z.string().optional(),
  OPENFT_S3_FORCE_PATH_STYLE: bool.default(false),
});

export type Env = Record<string, string | undefined>;

export interface S3Config {
  readonly endpoint: string | undefined;
  readonly bucket: string;
  readonly region: string;
  readonly accessKeyId: string | undefined;
  readonly secretAccessKey: string | undefined;
  readonly forcePathStyle: boolean;
}

export interface Config {
  readonly server: { readonly host: string; readonly port: number };
  readonly dataDir: string;
  readonly modelsDir: string;
  readonly apiKey: string | undefined;
  readonly files: { readonly maxUploadBytes: number; readonly uploadLeaseMs: number };
  readonly uploads: { readonly maxBytes: number; readonly expirySeconds: number };
  readonly logLevel: string;
  readonly workers: { readonly leaseMs: number };
  readonly worker: {
    readonly embedded: boolean;
    /** undefined: the project venv's python if there is one, else python3. */
    readonly python: string | undefined;
    readonly workDir: string;
    readonly device: "auto" | "cpu" | "cuda";
    readonly wandb: "auto" | "on" | "off";
    /** undefined: one per visible CUDA device, or 1. */
    readonly processes: number | undefined;
    readonly sharding: "auto" | "none" | "fsdp";
  };
  readonly serving: {
    readonly mode: "int4" | "fp32";
    readonly threads: number;
    readonly spinning: boolean;
    readonly maxBatch: number;
    readonly maxQueue: number;
    readonly maxAdapters: number;
    readonly cacheDir: string;
    readonly vllm: { readonly pools: ReadonlyMap<string, readonly string[]>; readonly adapterDir: string; readonly maxLoraRank: number };
  };
  readonly metrics: { readonly enabled: boolean; readonly token: string | undefined };
  readonly database: { readonly url: string | undefined };
  readonly s3: S3Config | undefined;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object") {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** "base=http://a:8000|http://b:8000,other=http://c:8000" → base → replica URLs. */
function parseVllmPools(spec: string): Map<string, string[]> {
  const pools = new Map<string, string[]>();
  for (const entry of spec.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
    const eq = entry.indexOf("=");
    const base = entry.slice(0, eq).trim();
    const urls = entry.slice(eq + 1).split("|").map((u) => u.trim()).filter((u) => u !== "");
    if (eq <= 0 || urls.length === 0) throw new ConfigError([`OPENFT_VLLM: '${entry}' is not BASE=URL[|URL...]`]);
    for (const u of urls) if (!/^https?:\/\/[^\s/]+/.test(u)) throw new ConfigError([`OPENFT_VLLM: '${u}' (replica of '${base}') is not an http(s) URL`]);
    if (pools.has(base)) throw new ConfigError([`OPENFT_VLLM: base model '${base}' is named twice`]);
    pools.set(base, urls);
  }
  return pools;
}

/** Overrides come from the command line (--host, --port, ...) and win over the environment. */
export function loadConfig(env: Env, overrides: Env = {}): Config {
  const merged: Env = {};
  for (const source of [env, overrides]) {
    for (const [k, v] of Object.entries(source)) if (v !== undefined && v !== "") merged[k] = v;
  }
  const parsed = envSchema.safeParse(merged);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  if (e.OPENFT_S3_ENDPOINT !== undefined && e.OPENFT_S3_BUCKET === undefined) {
    throw new ConfigError(["OPENFT_S3_BUCKET: required when OPENFT_S3_ENDPOINT is set"]);
  }
  const dataDir = path.resolve(e.OPENFT_DATA_DIR);
  return deepFreeze({
    server: { host: e.OPENFT_HOST, port: e.OPENFT_PORT },
    dataDir,
    modelsDir: path.resolve(e.OPENFT_MODELS_DIR),
    apiKey: e.OPENFT_API_KEY,
    files: { maxUploadBytes: e.OPENFT_MAX_UPLOAD_BYTES, uploadLeaseMs: e.OPENFT_UPLOAD_LEASE_SECONDS * 1000 },
    uploads: { maxBytes: e.OPENFT_UPLOADS_MAX_BYTES, expirySeconds: e.OPENFT_UPLOADS_EXPIRY_SECONDS },
    logLevel: e.OPENFT_LOG_LEVEL,
    workers: { leaseMs: e.OPENFT_WORKER_LEASE_SECONDS * 1000 },
    worker: {
      embedded: e.OPENFT_EMBEDDED_WORKER,
      python: e.OPENFT_PYTHON,
      workDir: path.resolve(e.OPENFT_WORK_DIR ?? path.join(dataDir, "work")),
      device: e.OPENFT_DEVICE,
      wandb: e.OPENFT_WANDB,
      processes: e.OPENFT_TRAIN_PROCESSES,
      sharding: e.OPENFT_TRAIN_SHARDING,
    },
    serving: {
      mode: e.OPENFT_SERVING_MODE,
      threads: e.OPENFT_SERVING_THREADS,
      spinning: e.OPENFT_SERVING_SPIN,
      // A batch never holds more sequences than there are adapter slots, so a running adapter is
      // never evicted by another row of the same batch.
      maxBatch: Math.min(e.OPENFT_SERVING_MAX_BATCH, e.OPENFT_SERVING_MAX_ADAPTERS),
      maxQueue: e.OPENFT_SERVING_MAX_QUEUE,
      maxAdapters: e.OPENFT_SERVING_MAX_ADAPTERS,
      cacheDir: path.resolve(e.OPENFT_SERVING_CACHE_DIR ?? path.join(dataDir, "serving")),
      vllm: {
        pools: parseVllmPools(e.OPENFT_VLLM ?? ""),
        adapterDir: path.resolve(e.OPENFT_VLLM_ADAPTER_DIR ?? path.join(dataDir, "vllm-adapters")),
        maxLoraRank: e.OPENFT_VLLM_MAX_LORA_RANK,
      },
    },
    metrics: { enabled: e.OPENFT_METRICS, token: e.OPENFT_METRICS_TOKEN },
    database: { url: e.DATABASE_URL },
    s3:
      e.OPENFT_S3_BUCKET === undefined
        ? undefined
        : {
            endpoint: e.OPENFT_S3_ENDPOINT,
            bucket: e.OPENFT_S3_BUCKET,
            region: e.OPENFT_S3_REGION,
            accessKeyId: e.OPENFT_S3_ACCESS_KEY_ID,
            secretAccessKey: e.OPENFT_S3_SECRET_ACCESS_KEY,
            forcePathStyle: e.OPENFT_S3_FORCE_PATH_STYLE,
          },
  });
}

/** The process environment, read here and only here. */
export function processEnv(): Env {
  return process.env;
}
