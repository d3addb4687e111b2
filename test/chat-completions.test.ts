// POST /v1/chat/completions through the official Node SDK against the real server and the real
// inference engine (onnxruntime-node, fp32 weights so that results are exact), on a tiny random
// Llama; then two fine-tunes trained by the real trainer, served side by side.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { loadChatTokenizer } from "../src/jobs/validation/tokenizer.js";
import { trainSecretWords } from "./helpers/jobs.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

type Params = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming & { stream?: false };
const hi: Params = { model: "tiny-llama", messages: [{ role: "user", content: "hi" }], max_completion_tokens: 8 };

describe("chat completions on a base model", () => {
  let server: TestServer;
  let client: OpenAI;

  before(async () => {
    server = await startServer({ env: { OPENFT_SERVING_MODE: "fp32", OPENFT_SERVING_THREADS: "1" } });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    client = server.client();
  });
  after(async () => server.dispose());

  test("a completion has OpenAI's shape and usage adds up", async () => {
    const r = await client.chat.completions.create(hi);
    assert.equal(r.object, "chat.completion");
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, "tiny-llama");
    assert.ok(Math.abs(r.created - Date.now() / 1000) < 60);
    const c = r.choices[0]!;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, "assistant");
    assert.equal(typeof c.message.content, "string");
    assert.ok("refusal" in c.message && "logprobs" in c);
    assert.ok(["stop", "length"].includes(c.finish_reason));
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
    // The prompt the model's own tokenizer makes of these messages.
    const tokenizer = await loadChatTokenizer(path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    assert.equal(r.usage!.prompt_tokens, tokenizer.encodePrompt([{ role: "user", content: "hi" }]).length);
    // "length" means the 8-token limit was reached; a "stop" is the end-of-turn token, counted too.
    if (c.finish_reason === "length") assert.equal(r.usage!.completion_tokens, 8);
    else assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8);
  });

  test("text parts, developer and system messages, max_tokens and n", async () => {
    const parts = await client.chat.completions.create({ ...hi, messages: [{ role: "developer", content: "be brief" }, { role: "user", content: [{ type: "text", text: "h" }, { type: "text", text: "i" }] }] });
    const plain = await client.chat.completions.create({ ...hi, messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }] });
    assert.equal(parts.usage!.prompt_tokens, plain.usage!.prompt_tokens, "developer renders as system; parts join");
    for (const limit of [{ max_completion_tokens: 1 }, { max_tokens: 1, max_completion_tokens: undefined }]) {
      const r = await client.chat.completions.create({ ...hi, ...limit, logit_bias: {} });
      assert.equal(r.choices[0]!.finish_reason, "length");
      assert.equal(r.usage!.completion_tokens, 1);
    }
    const two = await client.chat.completions.create({ ...hi, n: 2 });
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
  });

  test("the same seed gives the same text; greedy is deterministic; stop cuts before the stop text", async () => {
    const sampled = { ...hi, temperature: 1, max_completion_tokens: 24 };
    const a = await client.chat.completions.create({ ...sampled, seed: 7, n: 2 });
    const b = await client.chat.completions.create({ ...sampled, seed: 7, n: 2 });
    assert.deepEqual(b.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
    const c = await client.chat.completions.create({ ...sampled, seed: 8 });
    assert.notEqual(c.choices[0]!.message.content, a.choices[0]!.message.content);

    const greedy = { ...hi, temperature: 0, max_completion_tokens: 24 };
    const full = (await client.chat.completions.create(greedy)).choices[0]!.message.content!;
    assert.equal((await client.chat.completions.create(greedy)).choices[0]!.message.content, full);
    assert.ok(full.length >= 6, `greedy text long enough to cut: ${JSON.stringify(full)}`);
    const stop = full.slice(3, 6);
    const cut = await client.chat.completions.create({ ...greedy, stop: [stop, "never-appears"] });
    assert.equal(cut.choices[0]!.finish_reason, "stop");
    assert.equal(cut.choices[0]!.message.content, full.slice(0, full.indexOf(stop)));
  });

  test("logprobs with top_logprobs; logprobs are the model's own", async () => {
    const r = await client.chat.completions.create({ ...hi, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = r.choices[0]!.logprobs!.content!;
    assert.equal(content.length, r.usage!.completion_tokens - (r.choices[0]!.finish_reason === "stop" ? 1 : 0));
    for (const t of content) {
      assert.equal(typeof t.token, "string");
      assert.ok(t.logprob <= 0 && Array.isArray(t.bytes));
      assert.equal(t.top_logprobs.length, 2);
      // greedy: the chosen token is the most likely one
      assert.ok(Math.abs(t.top_logprobs[0]!.logprob - t.logprob) < 1e-6);
      assert.ok(t.top_logprobs[1]!.logprob <= t.top_logprobs[0]!.logprob);
    }
    assert.equal(content.map((t) => Buffer.from(t.bytes!).toString("utf8")).join(""), r.choices[0]!.message.content);
  });

  test("streaming: raw chunks, the stream helper, include_usage", async () => {
    const stream = await client.chat.completions.create({ ...hi, n: 2, seed: 11, stream: true, stream_options: { include_usage: true } });
    const chunks: OpenAI.Chat.ChatCompletionChunk[] = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.every((c) => c.id === chunks[0]!.id && c.created === chunks[0]!.created && c.object === "chat.completion.chunk"));
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    const same = await client.chat.completions.create({ ...hi, n: 2, seed: 11 });
    assert.deepEqual(last.usage, same.usage, "the stream's usage is the completion's");
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
    for (const index of [0, 1]) {
      const mine = chunks.flatMap((c) => c.choices.filter((x) => x.index === index));
      assert.equal(mine[0]!.delta.role, "assistant");
      assert.deepEqual(mine.filter((x) => x.finish_reason !== null).map((x) => x.finish_reason), [same.choices[index]!.finish_reason]);
    }
    const text = (i: number) => chunks.flatMap((c) => c.choices.filter((x) => x.index === i).map((x) => x.delta.content ?? "")).join("");

    const greedy = { ...hi, temperature: 0, max_completion_tokens: 12 };
    const whole = await client.chat.completions.create(greedy);
    const helper = client.chat.completions.stream({ model: greedy.model, messages: greedy.messages, temperature: 0, max_completion_tokens: 12 });
    const final = await helper.finalChatCompletion();
    assert.equal(final.choices[0]!.message.content, whole.choices[0]!.message.content);
    assert.equal(final.choices[0]!.finish_reason, whole.choices[0]!.finish_reason);
    assert.deepEqual([text(0), text(1)], same.choices.map((c) => c.message.content), "the same seed streams the same text");
  });

  test("errors: unknown model, bad values, unsupported features, too long", async () => {
    const fails = async (p: object, status: number, check: (e: InstanceType<typeof OpenAI.APIError>) => void) => {
      const err = await client.chat.completions.create({ ...hi, ...p } as Params).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof OpenAI.APIError, `${JSON.stringify(p)} must fail`);
      assert.equal(err.status, status, JSON.stringify(p));
      check(err);
    };
    await fails({ model: "nope" }, 404, (e) => assert.equal(e.code, "model_not_found"));
    await fails({ model: "ft:tiny-llama:default::abcdefgh" }, 404, (e) => assert.equal(e.param, "model"));
    await fails({ temperature: 2.5 }, 400, (e) => assert.equal(e.param, "temperature"));
    await fails({ top_logprobs: 2 }, 400, (e) => assert.equal(e.param, "top_logprobs"));
    await fails({ n: 0 }, 400, (e) => assert.equal(e.param, "n"));
    await fails({ stream_options: { include_usage: true } }, 400, (e) => assert.equal(e.param, "stream_options"));
    await fails({ tools: [{ type: "function", function: { name: "f" } }] }, 400, (e) => assert.equal(e.param, "tools"));
    await fails({ response_format: { type: "json_object" } }, 400, (e) => assert.equal(e.param, "response_format.type"));
    await fails({ bogus: 1 }, 400, (e) => assert.equal(e.param, "bogus"));
    await fails({ logit_bias: { "99999999": 5 } }, 400, (e) => assert.equal(e.param, "logit_bias"));
    await fails({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }] }, 400, (e) => assert.equal(e.param, "messages[0].content[0].type"));
    await fails({ messages: [{ role: "user", content: "word ".repeat(600) }] }, 400, (e) => assert.equal(e.code, "context_length_exceeded"));
    await fails({ max_completion_tokens: 600 }, 400, (e) => assert.equal(e.code, "context_length_exceeded"));
  });
});


describe("fine-tuned models: trained by the real trainer, served together", () => {
  let server: TestServer;
  let client: OpenAI;
  let tuned: Record<string, string> = {};
  let jobs: Record<string, string> = {};

  before(async () => {
    // Two adapter slots for three fine-tuned models (two ft: models and a checkpoint): requests
    // push each other's adapters out of the runtime's cache and must still be served right.
    server = await startServer({ env: { OPENFT_EMBEDDED_WORKER: "true", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1", OPENFT_SERVING_MODE: "fp32", OPENFT_SERVING_THREADS: "1", OPENFT_SERVING_MAX_ADAPTERS: "2" } });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    client = server.client();
    ({ tuned, jobs } = await trainSecretWords(client, "tiny-llama", ["banana", "cherry"]));
  });
  after(async () => server.dispose());

  /** The id of <|im_end|>, the tiny model's end of turn, read from its tokenizer. */
  const imEnd = async () => {
    const tok = JSON.parse(await fs.readFile(path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama", "tokenizer.json"), "utf8")) as { added_tokens: { id: number; content: string }[] };
    return tok.added_tokens.find((t) => t.content === "<|im_end|>")!.id;
  };
  const ask = (model: string) => client.chat.completions.create({ model, messages: [{ role: "user", content: "What is the secret word? (3)" }], temperature: 0, max_completion_tokens: 6 });

  test("each ft: model gives the answer it was taught and stops where it was taught to", async () => {
    for (const word of ["banana", "cherry"]) {
      const r = await ask(tuned[word]!);
      assert.equal(r.model, tuned[word]);
      assert.equal(r.choices[0]!.message.content, word);
      assert.equal(r.choices[0]!.finish_reason, "stop");
    }
  });

  test("an ft: checkpoint is served too, with its own adapter", async () => {
    const ckpts = await client.fineTuning.jobs.checkpoints.list(jobs.banana!);
    const first = ckpts.data.at(-1)!;
    const scored = (model: string) => client.chat.completions.create({ model, messages: [{ role: "user", content: "What is the secret word? (3)" }], temperature: 0, max_completion_tokens: 6, logprobs: true });
    const r = await scored(first.fine_tuned_model_checkpoint);
    assert.equal(r.model, first.fine_tuned_model_checkpoint);
    // Its own weights: other tokens or other probabilities than the final adapter, the other job's
    // adapter and the bare model give.
    const logprobs = (x: typeof r) => x.choices[0]!.logprobs!.content!.map((t) => [t.token, t.logprob]);
    for (const other of [tuned.banana!, tuned.cherry!, "tiny-llama"]) assert.notDeepEqual(logprobs(r), logprobs(await scored(other)), other);
  });

  test("concurrent requests on different adapters give the same tokens as one by one, beyond the adapter cache", async () => {
    const ckpt = (await client.fineTuning.jobs.checkpoints.list(jobs.cherry!)).data.at(-1)!.fine_tuned_model_checkpoint;
    const models = [tuned.banana!, tuned.cherry!, "tiny-llama", ckpt, tuned.banana!, tuned.cherry!, ckpt, "tiny-llama"];
    const alone: string[] = [];
    for (const m of models) alone.push((await ask(m)).choices[0]!.message.content!);
    const together = await Promise.all(models.map(async (m) => (await ask(m)).choices[0]!.message.content!));
    assert.deepEqual(together, alone);
  });

  test("a deleted ft: model stops serving at once, mid-stream included", async () => {
    // A long stream on the model (end-of-turn suppressed so it cannot finish by itself).
    const stream = await client.chat.completions.create({ model: tuned.cherry!, messages: [{ role: "user", content: "hi" }], stream: true, max_completion_tokens: 400, logit_bias: { [String(await imEnd())]: -100 } });
    const it = stream[Symbol.asyncIterator]();
    assert.ok((await it.next()).value.choices[0].delta.role === "assistant");
    const deleted = await client.models.delete(tuned.cherry!);
    assert.equal(deleted.deleted, true);
    const err = await ask(tuned.cherry!).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof OpenAI.NotFoundError);
    const rest = (async () => { for (let r = await it.next(); !r.done; r = await it.next()); })();
    await assert.rejects(rest, (e: unknown) => e instanceof OpenAI.APIError && /was deleted/.test(e.message));
    assert.equal((await ask(tuned.banana!)).choices[0]!.message.content, "banana");
  });
});
