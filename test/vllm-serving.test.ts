// Base and ft: models routed to a real CPU vLLM (OPENFT_VLLM), through the official Node SDK: the
// chat contract as in-process, fine-tunes trained by the real trainer and served by vLLM with the
// taught answer, eight adapters at once, delete, the rank limit, and a pool of two replicas with
// one killed mid-test and brought back. The in-process route stays beside it on another base.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { secretWordChats, trainSecretWords } from "./helpers/jobs.js";
import { parseMetrics, sample } from "./helpers/prometheus.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { sharedVllm, stopSharedVllm, vllmReplica, type VllmReplica } from "./helpers/vllm.js";


describe("serving through a vLLM pool of two replicas", () => {
  let server: TestServer;
  let client: OpenAI;
  let own: VllmReplica;
  let ownReady: Promise<void>;
  let sharedUrl: string;
  let tuned: Record<string, string> = {};
  let jobs: Record<string, string> = {};

  before(async () => {
    const shared = await sharedVllm();
    sharedUrl = shared.url;
    // Our own second replica, the one this suite kills and brings back. It starts once openft is
    // up, while the jobs train; until it answers, openft finds it refusing connections and serves
    // from the other.
    // vLLM's CPU build pins its engine to the first core it does not reserve, the same core for
    // every replica on a host: two replicas on one machine then take turns (one stalled at
    // 0.1 tokens/s while the other ran, measured here). Ours floats instead, on one thread (two
    // OpenMP threads, one of them on the other replica's core, wait on each other).
    own = await vllmReplica(shared.modelDir, { VLLM_CPU_OMP_THREADS_BIND: "nobind", OMP_NUM_THREADS: "1" });
    server = await startServer({ env: {
      OPENFT_VLLM: `tiny-llama=${shared.url}|${own.url}`, OPENFT_EMBEDDED_WORKER: "true", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1",
      OPENFT_SERVING_MODE: "fp32", OPENFT_SERVING_THREADS: "1",
    } });
    const models = server.env.OPENFT_MODELS_DIR!;
    await fs.cp(shared.modelDir, path.join(models, "tiny-llama"), { recursive: true });
    // The same weights under another name, not in OPENFT_VLLM: served in-process.
    await fs.cp(shared.modelDir, path.join(models, "tiny-llama-local"), { recursive: true });
    client = server.client();
    ownReady = own.start();
    ownReady.catch(() => undefined);
    ({ tuned, jobs } = await trainSecretWords(client, "tiny-llama", ["banana", "cherry"]));
  });
  after(async () => {
    await server?.dispose();
    await own?.kill();
    await stopSharedVllm();
  });

  const hi = { model: "tiny-llama", messages: [{ role: "user" as const, content: "hi" }], max_completion_tokens: 8 };
  const ask = (model: string, extra: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming> = {}) =>
    client.chat.completions.create({ model, messages: [{ role: "user", content: "What is the secret word? (3)" }], temperature: 0, max_completion_tokens: 6, ...extra });

  test("a base model through vLLM: OpenAI's shape, our ids, the backend header; stream with usage", async () => {
    const { data: r, response } = await client.chat.completions.create(hi).withResponse();
    assert.equal(response.headers.get("x-openft-backend"), "vllm");
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, "tiny-llama");
    assert.equal(r.choices[0]!.message.role, "assistant");
    assert.ok(["stop", "length"].includes(r.choices[0]!.finish_reason));
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
    assert.ok(r.usage!.completion_tokens > 0 && r.usage!.completion_tokens <= 8);
    const { data: stream, response: sr } = await client.chat.completions.create({ ...hi, stream: true, stream_options: { include_usage: true } }).withResponse();
    assert.equal(sr.headers.get("x-openft-backend"), "vllm");
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => c.id === chunks[0]!.id && c.model === "tiny-llama" && c.object === "chat.completion.chunk"));
    assert.equal(chunks[0]!.choices[0]!.delta.role, "assistant");
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage!.completion_tokens > 0);
    assert.ok(["stop", "length"].includes(chunks.at(-2)!.choices[0]!.finish_reason!));
  });

  test("the in-process route is unchanged beside it", async () => {
    const { data: r, response } = await client.chat.completions.create({ ...hi, model: "tiny-llama-local" }).withResponse();
    assert.equal(response.headers.get("x-openft-backend"), "onnx");
    assert.equal(r.model, "tiny-llama-local");
    assert.ok(r.usage!.completion_tokens > 0);
  });

  test("the sampling contract: n, seed, stop, max_tokens, penalties, logprobs", async () => {
    const sampled = { ...hi, temperature: 1, max_completion_tokens: 16, presence_penalty: 0.5, frequency_penalty: 0.5 };
    const a = await client.chat.completions.create({ ...sampled, seed: 7, n: 2 });
    const b = await client.chat.completions.create({ ...sampled, seed: 7, n: 2 });
    assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
    assert.deepEqual(b.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
    assert.equal(b.usage!.completion_tokens, a.usage!.completion_tokens);
    const one = await client.chat.completions.create({ ...hi, max_tokens: 1, max_completion_tokens: undefined });
    assert.equal(one.choices[0]!.finish_reason, "length");
    assert.equal(one.usage!.completion_tokens, 1);
    const greedy = await client.chat.completions.create({ ...hi, temperature: 0, max_completion_tokens: 12 });
    const text = greedy.choices[0]!.message.content!;
    const cut = text.trim().slice(2, 4);
    assert.equal(cut.length, 2, `greedy text long enough to cut: ${JSON.stringify(text)}`);
    const stopped = await client.chat.completions.create({ ...hi, temperature: 0, max_completion_tokens: 12, stop: [cut] });
    assert.equal(stopped.choices[0]!.message.content, text.slice(0, text.indexOf(cut)));
    assert.equal(stopped.choices[0]!.finish_reason, "stop");
    const lp = await client.chat.completions.create({ ...hi, temperature: 0, max_completion_tokens: 4, logprobs: true, top_logprobs: 2 });
    const content = lp.choices[0]!.logprobs!.content!;
    assert.equal(content.length, lp.usage!.completion_tokens - (lp.choices[0]!.finish_reason === "stop" ? 1 : 0));
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.logprob <= 0 && Array.isArray(t.bytes));
      assert.ok(t.top_logprobs[0]!.logprob >= t.top_logprobs[1]!.logprob);
      assert.equal(t.token, t.top_logprobs[0]!.token, "greedy: the chosen token is the most likely");
    }
  });

  test("errors: our envelope, 404 model_not_found, 400 context_length_exceeded, auth", async () => {
    const fails = async (p: object, status: number, check: (e: InstanceType<typeof OpenAI.APIError>) => void) => {
      const err = await client.chat.completions.create({ ...hi, ...p } as never).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof OpenAI.APIError, String(err));
      assert.equal(err.status, status);
      check(err);
    };
    await fails({ model: "ft:tiny-llama:default::nope0000" }, 404, (e) => assert.equal(e.code, "model_not_found"));
    await fails({ messages: [{ role: "user", content: "word ".repeat(5000) }] }, 400, (e) => assert.equal(e.code, "context_length_exceeded"));
    await fails({ max_completion_tokens: 5000 }, 400, (e) => assert.equal(e.code, "context_length_exceeded"));
    const anon = new OpenAI({ baseURL: server.baseURL, apiKey: "sk-wrong-key-000000", maxRetries: 0 });
    await assert.rejects(anon.chat.completions.create(hi), (e: unknown) => e instanceof OpenAI.AuthenticationError);
  });

  test("each ft: model gives the answer it was taught, through vLLM", async () => {
    for (const word of ["banana", "cherry"]) {
      const { data: r, response } = await ask(tuned[word]!).withResponse();
      assert.equal(response.headers.get("x-openft-backend"), "vllm");
      assert.equal(r.model, tuned[word]);
      assert.equal(r.choices[0]!.message.content, word);
      assert.equal(r.choices[0]!.finish_reason, "stop");
    }
    const stream = await client.chat.completions.create({ model: tuned.banana!, messages: [{ role: "user", content: "What is the secret word? (3)" }], temperature: 0, max_completion_tokens: 6, stream: true });
    let text = "";
    for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
    assert.equal(text, "banana");
  });

  test("eight concurrent requests on eight adapters equal the same requests one by one", async () => {
    const models: string[] = [];
    for (const word of ["banana", "cherry"]) {
      models.push(tuned[word]!);
      for (const c of (await client.fineTuning.jobs.checkpoints.list(jobs[word]!)).data) models.push(c.fine_tuned_model_checkpoint);
    }
    const eight = models.slice(0, 8);
    assert.equal(new Set(eight).size, 8, `eight adapters: ${eight.join(" ")}`);
    const alone: string[] = [];
    for (const m of eight) alone.push((await ask(m, { max_completion_tokens: 8 })).choices[0]!.message.content!);
    const together = await Promise.all(eight.map(async (m) => (await ask(m, { max_completion_tokens: 8 })).choices[0]!.message.content!));
    assert.deepEqual(together, alone);
  });

  test("a job whose lora_rank exceeds the pool's max rank is refused at create", async () => {
    const file = await client.files.create({ file: await toFile(Buffer.from(secretWordChats("x")), "r.jsonl"), purpose: "fine-tune" });
    const err = await client.fineTuning.jobs.create({ model: "tiny-llama", training_file: file.id, method: { type: "supervised", supervised: { hyperparameters: { lora_rank: 32 } as never } } }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.param, "method.supervised.hyperparameters.lora_rank");
    assert.match(err.message, /at most 16/);
  });

  /** <|im_end|>, the tiny model's end of turn: suppressed, a reply runs to max_completion_tokens. */
  const imEnd = async () => {
    const tok = JSON.parse(await fs.readFile(path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama", "tokenizer.json"), "utf8")) as { added_tokens: { id: number; content: string }[] };
    return tok.added_tokens.find((t) => t.content === "<|im_end|>")!.id;
  };

  /** Requests vLLM at `url` runs or queues, from its Prometheus gauges. */
  const inVllm = async (url: string) => {
    // A fresh connection each time: vLLM (uvicorn) closes idle ones after 5 s, and a reused one
    // it has just closed fails the fetch.
    const m = parseMetrics(await (await fetch(`${url}/metrics`, { headers: { connection: "close" } })).text());
    return (sample(m, "vllm:num_requests_running", {}) ?? 0) + (sample(m, "vllm:num_requests_waiting", {}) ?? 0);
  };

  /** Asks `model` two at a time until the replica at `url` lists its adapter as loaded. */
  const untilServedBy = async (url: string, model: string) => {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const answers = await Promise.all([0, 1].map(() => ask(model)));
      assert.deepEqual(answers.map((r) => r.choices[0]!.message.content), ["banana", "banana"]);
      const listed = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
      if (listed.data.some((m) => m.id === model)) return;
      assert.ok(Date.now() < deadline, `openft routed no request to ${url} within 2 minutes`);
    }
  };

  test("a replica killed mid-stream ends that stream with an error; the other replica serves on; back, it reloads adapters", async () => {
    await ownReady;
    // openft probes a replica it found down every second: wait until it routes to ours again (an
    // adapter it loaded there shows that).
    await untilServedBy(own.url, tuned.banana!);
    // 4000 tokens (the model's context is 4096): tens of seconds of a stream on this tiny model with
    // four at once on two CPU cores, far longer than the moment between the last open and the
    // kill. (1500 were done in about 3 s on an idle machine: both streams ended before the kill.)
    const long = { model: tuned.banana!, messages: [{ role: "user" as const, content: "hi" }], temperature: 1, max_completion_tokens: 4000, logit_bias: { [String(await imEnd())]: -100 } };
    const raw = () => fetch(`${server.baseURL}/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" }, body: JSON.stringify(long) });
    // One at a time until each is generating: the pool gives each to the replica with fewer in
    // flight, so each replica runs one stream, then one plain request.
    // The rest of the stream comes back wrapped: an async function returning the bare promise
    // would be awaited whole (each stream read to its end before the next opened).
    const open = async () => {
      const it = (await client.chat.completions.create({ ...long, stream: true }))[Symbol.asyncIterator]();
      let chunks = 0;
      for (let r = await it.next(); !r.value?.choices[0]?.delta.content; r = await it.next()) assert.ok(!r.done);
      return { rest: (async () => { for (let r = await it.next(); !r.done; r = await it.next()) chunks += 1; })(), chunks: () => chunks };
    };
    const first = await open();
    const second = await open();
    const states = ["running", "running"];
    const t0 = Date.now();
    [first, second].forEach((s, i) => void s.rest.then(() => (states[i] = `done after ${Date.now() - t0} ms, ${s.chunks()} chunks`), (e: unknown) => (states[i] = `failed after ${Date.now() - t0} ms: ${String(e)}`)));
    const settled = Promise.allSettled([first.rest, second.rest]);
    const plain = [raw(), raw()];
    // Kill only once vLLM itself runs two requests on our replica (its stream and its plain one):
    // a plain request the killed replica had not yet answered with headers would rightly be
    // retried on the other replica, and the test would not see the failure it is about. What the
    // other replica does meanwhile does not matter: its stream and plain request succeed, done
    // before the kill or after it.
    const deadline = Date.now() + 60_000;
    for (let n = await inVllm(own.url); n < 2; n = await inVllm(own.url)) {
      assert.ok(Date.now() < deadline, `our replica runs a stream and a plain request within a minute (in vLLM: ${n}, streams: ${JSON.stringify(states)}):\n${own.log()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    await own.kill();
    const streamed = await settled;
    const failed = streamed.filter((s) => s.status === "rejected");
    assert.equal(failed.length, 1, `exactly the stream on the killed replica fails (${JSON.stringify(states)})`);
    const reason = (failed[0] as PromiseRejectedResult).reason as unknown;
    assert.ok(reason instanceof OpenAI.APIError, String(reason));
    const answers = await Promise.all(plain.map(async (p) => { const res = await p; return { status: res.status, body: await res.json() as { error?: { type: string; message: string } } }; }));
    const bad = answers.filter((a) => a.status !== 200);
    assert.equal(bad.length, 1, JSON.stringify(answers.map((a) => a.status)));
    assert.ok(bad[0]!.status >= 500 && bad[0]!.status < 600, "retryable");
    assert.equal(bad[0]!.body.error!.type, "server_error");
    assert.ok(!bad[0]!.body.error!.message.includes(String(own.port)) && !bad[0]!.body.error!.message.includes(sharedUrl), "no replica address");
    // Later requests all go to the replica that is up.
    for (let i = 0; i < 3; i++) assert.equal((await ask(tuned.cherry!)).choices[0]!.message.content, "cherry");
    await own.start();
    // Back up (probed), it gets requests again; their adapters are loaded on demand.
    await untilServedBy(own.url, tuned.banana!);
  });

  test("a deleted ft: model stops serving at once, mid-stream included, and is unloaded from the replicas", async () => {
    const stream = await client.chat.completions.create({ model: tuned.cherry!, messages: [{ role: "user", content: "hi" }], temperature: 1, stream: true, max_completion_tokens: 4000, logit_bias: { [String(await imEnd())]: -100 } });
    const it = stream[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.choices[0].delta.role, "assistant");
    assert.equal((await client.models.delete(tuned.cherry!)).deleted, true);
    const err = await ask(tuned.cherry!).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof OpenAI.NotFoundError);
    const seen: string[] = [];
    const rest = (async () => { for (let r = await it.next(); !r.done; r = await it.next()) seen.push(JSON.stringify(r.value.choices[0] ?? r.value.usage)); })();
    const ended = await rest.then(() => undefined, (e: unknown) => e);
    assert.ok(ended instanceof OpenAI.APIError && /was deleted/.test(ended.message), `the stream ends with the deletion (${String(ended)}; ${seen.length} chunks, the last ${seen.slice(-3).join(" ")})`);
    for (const url of [sharedUrl, own.url]) {
      const listed = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
      assert.ok(!listed.data.some((m) => m.id === tuned.cherry), `unloaded from ${url}`);
    }
    assert.equal((await ask(tuned.banana!)).choices[0]!.message.content, "banana");
  });
});
