// The sampler and the streamed text of a choice, on plain numbers and a real tokenizer (no engine).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChoiceSampler, Rng, choiceSeed, logSumExp, topK, type SamplingParams } from "../src/engine/serving/sampler.js";
import { ChoiceText } from "../src/engine/serving/choice-text.js";
import { Scheduler, type StepRuntime } from "../src/engine/serving/scheduler.js";

const params = (p: Partial<SamplingParams> = {}): SamplingParams => ({ temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, logitBias: new Map(), topLogprobs: null, ...p });
const logits = Float32Array.from([0.5, 2, 1, -1, 1.9]);

test("greedy picks the largest logit; logprobs are the raw log-softmax", () => {
  const s = new ChoiceSampler(params({ temperature: 0, topLogprobs: 2 }), new Rng(1n)).sample(logits);
  assert.equal(s.id, 1);
  assert.ok(Math.abs(s.logprob! - (2 - logSumExp(logits))) < 1e-9);
  assert.deepEqual(s.top!.map((t) => t.id), [1, 4]);
});

test("the same seed draws the same tokens; choices of one request differ", () => {
  const draw = (seed: bigint) => {
    const s = new ChoiceSampler(params(), new Rng(seed));
    return Array.from({ length: 50 }, () => s.sample(logits).id);
  };
  assert.deepEqual(draw(choiceSeed(42n, 0)), draw(choiceSeed(42n, 0)));
  assert.notDeepEqual(draw(choiceSeed(42n, 0)), draw(choiceSeed(42n, 1)));
});

test("frequencies follow the softmax at temperature 1 and sharpen at low temperature", () => {
  const s = new ChoiceSampler(params(), new Rng(3n));
  const counts = new Array(5).fill(0);
  for (let i = 0; i < 20000; i++) counts[s.sample(logits).id]++;
  const lse = logSumExp(logits);
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(counts[i] / 20000 - Math.exp(logits[i]! - lse)) < 0.015, `token ${i}`);
  const cold = new ChoiceSampler(params({ temperature: 0.02 }), new Rng(3n));
  assert.ok(Array.from({ length: 200 }, () => cold.sample(logits).id).filter((id) => id === 1).length > 180);
});

test("top_p keeps only the nucleus; logit_bias and penalties move tokens", () => {
  const nucleus = new ChoiceSampler(params({ topP: 0.5 }), new Rng(5n));
  const seen = new Set(Array.from({ length: 500 }, () => nucleus.sample(logits).id));
  assert.deepEqual([...seen].sort(), [1, 4]);
  const biased = new ChoiceSampler(params({ temperature: 0, logitBias: new Map([[3, 100]]) }), new Rng(1n));
  assert.equal(biased.sample(logits).id, 3);
  const penalised = new ChoiceSampler(params({ temperature: 0, presencePenalty: 2 }), new Rng(1n));
  assert.deepEqual([penalised.sample(logits).id, penalised.sample(logits).id], [1, 4]);
  const freq = new ChoiceSampler(params({ temperature: 0, frequencyPenalty: 0.06 }), new Rng(1n));
  assert.deepEqual([freq.sample(logits).id, freq.sample(logits).id, freq.sample(logits).id], [1, 1, 4]);
});

test("topK orders by value and keeps the lower id on ties", () => {
  assert.deepEqual(topK(Float32Array.from([1, 3, 3, 2]), 3), [1, 2, 3]);
  assert.deepEqual(topK(Float32Array.from([1]), 0), []);
});

test("choice text holds back half characters and possible stop prefixes, and cuts at a stop", () => {
  // A decoder over byte tokens: ids are UTF-8 bytes, so "é" arrives in two tokens.
  const decoder = { decode: (ids: readonly number[]) => Buffer.from(ids).toString("utf8") };
  const ids = (s: string) => [...Buffer.from(s, "utf8")];
  const t = new ChoiceText(decoder, ["END"]);
  const out = ids("café E").map((b) => t.push(b));
  assert.deepEqual(out, ["c", "a", "f", "", "é", " ", ""]);
  assert.equal(t.push(ids("N")[0]!), "");
  assert.equal(t.push(ids("D")[0]!), "");
  assert.ok(t.stopped);
  assert.equal(t.text, "café ");
  const u = new ChoiceText(decoder, ["END"]);
  for (const b of ids("so E")) u.push(b);
  assert.equal(u.flush(), "E", "held-back text is released at the end");
  assert.equal(u.text, "so E");
  // A stop whose next character arrives in pieces: its prefix stays held behind the half character.
  const w = new ChoiceText(decoder, ["xé"]);
  const streamed = ids("axéb").map((b) => w.push(b)).join("");
  assert.equal(streamed, "a");
  assert.ok(w.stopped);
  assert.equal(w.text, "a");
});

test("choice text decodes incrementally: the same text as decoding everything, in linear work", () => {
  // A SentencePiece-like decoder: "▁" is a space, dropped at the start of whatever it decodes.
  const vocab = ["▁The", "▁light", "house", "▁keeper", ",", "▁é", "t", "é", "▁", "\u00e9"];
  let work = 0;
  const decoder = {
    decode: (ids: readonly number[]) => {
      work += ids.length;
      return ids.map((i) => vocab[i]!).join("").replace(/▁/g, " ").replace(/^ /, "");
    },
  };
  const ids = Array.from({ length: 600 }, (_, i) => (i * 7 + (i >> 3)) % vocab.length);
  const t = new ChoiceText(decoder, []);
  let streamed = "";
  for (const id of ids) streamed += t.push(id);
  streamed += t.flush();
  work = 0;
  const whole = decoder.decode(ids);
  assert.equal(streamed, whole);
  assert.equal(t.text, whole);
  // Work per token stays bounded by the window, not by the reply so far.
  const u = new ChoiceText(decoder, []);
  work = 0;
  for (const id of ids) u.push(id);
  assert.ok(work < 10 * ids.length, `decoded ${work} ids for ${ids.length} tokens`);
});

/** StepRuntimeDouble: a test double of the model runtime, whose steps are `step`; no model behind it. */
const stepRuntimeDouble = (step: StepRuntime["step"]): StepRuntime => ({
  contextLength: 64,
  step,
  fork: async () => undefined,
  loadAdapter: async () => undefined,
  free: () => undefined,
});

test("scheduler: a request whose text cannot be decoded fails alone; the others finish", async () => {
  // every step's logits favour token (seq + step) % 5
  let steps = 0;
  const scheduler = new Scheduler(stepRuntimeDouble(async (items) => {
    steps++;
    return items.map((it) => Float32Array.from({ length: 5 }, (_, t) => (t === (it.seq + steps) % 5 ? 1 : 0)));
  }), 8);
  const request = (decode: (ids: readonly number[]) => string) => scheduler.generate({
    promptIds: [1, 2], adapter: null, n: 1, maxTokens: 4, stopTokenIds: new Set(), stops: [],
    sampling: params({ temperature: 0 }), seed: 0n, decoder: { decode }, onEvent: () => undefined,
  });
  const ok = request((ids) => ids.join(","));
  const broken = request(() => {
    throw new Error("cannot decode");
  });
  await assert.rejects(broken, /cannot decode/);
  const done = await ok;
  assert.equal(done.completionTokens, 4);
  assert.equal(done.choices[0]!.finish, "length");
});

test("scheduler: requests submitted together are prefilled in one step, then decoded together", async () => {
  // records each step's (seq, token count) and returns flat logits
  const seen: { seq: number; tokens: number }[][] = [];
  const scheduler = new Scheduler(stepRuntimeDouble(async (items) => {
    seen.push(items.map((it) => ({ seq: it.seq, tokens: it.tokens.length })));
    return items.map(() => new Float32Array(5));
  }), 8);
  const request = () => scheduler.generate({
    promptIds: [1, 2, 3], adapter: null, n: 1, maxTokens: 3, stopTokenIds: new Set(), stops: [],
    sampling: params({ temperature: 0 }), seed: 0n, decoder: { decode: (ids) => ids.join(",") }, onEvent: () => undefined,
  });
  const done = await Promise.all([request(), request(), request()]);
  assert.deepEqual(done.map((d) => d.completionTokens), [3, 3, 3]);
  assert.equal(seen.length, 3, "one prefill step and two decode steps");
  assert.deepEqual(seen[0]!.map((s) => s.tokens), [3, 3, 3]);
  for (const step of seen.slice(1)) assert.deepEqual(step.map((s) => s.tokens), [1, 1, 1]);
});
