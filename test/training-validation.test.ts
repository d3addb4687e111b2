// The training-file validator (src/jobs/validation) on weightless model folders: OpenAI's chat
// format rules, error codes and wording, token counts with real tokenizers, auto hyperparameters.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import gpt3 from "gpt-3-encoder";
import { checkChatExample, type ChatExample } from "../src/jobs/validation/chat-format.js";
import { loadChatTokenizer, type ChatTokenizer } from "../src/jobs/validation/tokenizer.js";
import { resolveAutoHyperparameters, validateTrainingFile, type ValidateFileOptions } from "../src/jobs/validation/validate-file.js";
import { buildGpt2ChatmlFolder, buildQwen3Folder } from "./helpers/tiny-models.js";

const KNOWN: ChatExample = {
  messages: [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello!" },
  ],
};
const KNOWN_CHATML = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
  + "<|im_start|>assistant\nHello!<|im_end|>\n";
const TOOL_CALL = { id: "call_1", type: "function", function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" } };
const TOOL_EXAMPLE = {
  tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }],
  messages: [
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, tool_calls: [TOOL_CALL] },
    { role: "tool", tool_call_id: "call_1", content: "sunny" },
    { role: "assistant", content: [{ type: "text", text: "Sunny." }] },
  ],
};

let tmp: string;
let gpt2: ChatTokenizer;
let qwen3: ChatTokenizer;

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "openft-validation-"));
  gpt2 = await loadChatTokenizer(await buildGpt2ChatmlFolder({ parent: tmp, maxPositionEmbeddings: 256 }));
  qwen3 = await loadChatTokenizer(await buildQwen3Folder({ parent: tmp }));
});
after(async () => rm(tmp, { recursive: true, force: true }));

const lines = (n: number, example: unknown = KNOWN): string[] => Array.from({ length: n }, () => JSON.stringify(example));
const training = (): ValidateFileOptions => ({ fileId: "file-abc", param: "training_file", tokenizer: gpt2, minExamples: 10 });

/** 12 good lines with `bad` at line 3 (or raw text when `bad` is a string). */
function fileWith(bad: unknown): string[] {
  const out = lines(12);
  out[2] = typeof bad === "string" ? bad : JSON.stringify(bad);
  return out;
}

const user = { role: "user", content: "Hi" };
const assistant = { role: "assistant", content: "Hello!" };
const FORMAT_CASES: [string, unknown, string][] = [
  ["invalid JSON", "{\"messages\": [", "Example 3, Expected file to have JSONL format, where every line is a valid JSON dictionary"],
  ["not an object", "[1, 2]", "Example 3, Expected a JSON object, got array"],
  ["no messages", { prompt: "a", completion: "b" }, "Example 3, Unexpected format, expected chat messages: field 'messages' is missing"],
  ["empty messages", { messages: [] }, "Example 3, Field 'messages' must be a non-empty array"],
  ["role missing", { messages: [user, { content: "x" }] }, "Example 3, message 2 Discriminator 'role' is missing in value"],
  ["unknown role", { messages: [{ role: "bot", content: "x" }, assistant] }, "Example 3, message 1 Input tag 'bot' found using 'role' does not match any of the expected tags: 'system', 'developer', 'user', 'assistant', 'tool', 'function'"],
  ["message not an object", { messages: [user, "hello"] }, "Example 3, message 2 Expected a message object, got string"],
  ["unknown key", { messages: [user, { ...assistant, contents: "x" }] }, "Example 3, message 2 Unrecognized key 'contents'; allowed keys are role, content, name, weight, tool_calls, function_call, tool_call_id, refusal"],
  ["content a number", { messages: [{ role: "user", content: 5 }, assistant] }, "Example 3, message 1 Field 'content' must be a string or an array of text parts, got number"],
  ["image part", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }, assistant] }, "Example 3, message 1 Content part 1 has type 'image_url'; only 'text' parts are supported"],
  ["user content null", { messages: [{ role: "user", content: null }, assistant] }, "Example 3, message 1 Field 'content' is required"],
  ["assistant null content, no calls", { messages: [user, { role: "assistant", content: null }] }, "Example 3, message 2 Field 'content' is required unless the assistant message has 'tool_calls' or 'function_call'"],
  ["weight on user", { messages: [{ ...user, weight: 1 }, assistant] }, "Example 3, message 1 Field 'weight' is only allowed on assistant messages, not on a user message"],
  ["weight 0.5", { messages: [user, { ...assistant, weight: 0.5 }] }, "Example 3, message 2 Field 'weight' must be 0 or 1, got 0.5"],
  ["weight true", { messages: [user, { ...assistant, weight: true }] }, "Example 3, message 2 Field 'weight' must be 0 or 1, got true"],
  ["tool without tool_call_id", { messages: [user, { role: "tool", content: "sunny" }, assistant] }, "Example 3, message 2 Field 'tool_call_id' is required on tool messages and must be a string"],
  ["malformed tool_calls", { messages: [user, { role: "assistant", content: null, tool_calls: [{ function: { name: "f" } }] }] }, "Example 3, message 2 Tool call 1 must be {id, type: 'function', function: {name, arguments}} with string name and arguments"],
  ["malformed tools", { tools: [{ type: "function", function: { description: "no name" } }], messages: [user, assistant] }, "Example 3, Tool 1 must be {type: 'function', function: {name, description?, parameters?}}"],
  ["parallel_tool_calls not boolean", { parallel_tool_calls: "yes", messages: [user, assistant] }, "Example 3, Field 'parallel_tool_calls' must be a boolean"],
  ["no assistant", { messages: [user] }, "Example 3, No trainable assistant message: at least one assistant message must have weight 1 or no weight"],
  ["only weight-0 assistants", { messages: [user, { ...assistant, weight: 0 }] }, "Example 3, No trainable assistant message: at least one assistant message must have weight 1 or no weight"],
];

describe("format failures", () => {
  for (const [name, bad, problem] of FORMAT_CASES) {
    test(name, async () => {
      const result = await validateTrainingFile(fileWith(bad), training());
      assert.deepEqual(result, {
        ok: false,
        error: {
          code: "invalid_training_file",
          param: "training_file",
          message: `The job failed due to an invalid training file. Invalid file format. ${problem} (file file-abc, line 3)`,
        },
      });
    });
  }

  test("blank lines are skipped: Example N counts examples, the suffix names the line", async () => {
    const file = ["", ...lines(3), "   ", JSON.stringify({ messages: [{ content: "x" }] }), ...lines(8)];
    const result = await validateTrainingFile(file, training());
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.error.message : "", /Example 4, message 1 Discriminator 'role' is missing in value \(file file-abc, line 6\)$/);
  });

  test("a validation file reports invalid_validation_file", async () => {
    const result = await validateTrainingFile(["{}"], { ...training(), fileId: "file-val", param: "validation_file", minExamples: 1 });
    assert.deepEqual(result, {
      ok: false,
      error: {
        code: "invalid_validation_file",
        param: "validation_file",
        message: "The job failed due to an invalid validation file. Invalid file format. Example 1, Unexpected format, "
          + "expected chat messages: field 'messages' is missing (file file-val, line 1)",
      },
    });
  });
});

describe("example counts and tokens", () => {
  test("9 examples → invalid_n_examples", async () => {
    assert.deepEqual(await validateTrainingFile(lines(9), training()), {
      ok: false,
      error: { code: "invalid_n_examples", param: "training_file", message: "Training file has 9 example(s), but must have at least 10 examples (file file-abc)" },
    });
  });

  test("an empty validation file → invalid_n_examples", async () => {
    const result = await validateTrainingFile([""], { ...training(), param: "validation_file", minExamples: 1 });
    assert.deepEqual(result, {
      ok: false,
      error: { code: "invalid_n_examples", param: "validation_file", message: "Validation file has 0 example(s), but must have at least 1 examples (file file-abc)" },
    });
  });

  test("the ChatML render of a known example, counted independently with gpt-3-encoder", () => {
    assert.equal(gpt2.render(KNOWN), KNOWN_CHATML);
    // Special tokens split the text; each piece between them is plain GPT-2 BPE.
    const pieces = KNOWN_CHATML.split(/<\|im_start\|>|<\|im_end\|>/).filter((p) => p !== "");
    const specials = KNOWN_CHATML.match(/<\|im_(start|end)\|>/g)!.length;
    const expected = specials + pieces.reduce((sum, p) => sum + gpt3.encode(p).length, 0);
    assert.equal(gpt2.countText(KNOWN_CHATML), expected);
    assert.equal(gpt2.countTokens(KNOWN), expected);
  });

  test("10 valid examples (one of them async) → ok with token totals", async () => {
    async function* asyncLines(): AsyncGenerator<string> {
      yield* lines(9);
      yield JSON.stringify(TOOL_EXAMPLE) + "\r";
    }
    const known = gpt2.countTokens(KNOWN);
    const tool = gpt2.countTokens(TOOL_EXAMPLE as ChatExample);
    assert.ok(tool > known);
    assert.deepEqual(await validateTrainingFile(asyncLines(), training()), { ok: true, nExamples: 10, totalTokens: 9 * known + tool, maxTokens: tool });
  });

  test("weight 0 on one assistant turn is fine while another is trainable", async () => {
    const example = { messages: [user, { ...assistant, weight: 0 }, user, { ...assistant, weight: 1 }] };
    assert.equal(checkChatExample(example, 1).ok, true);
    const result = await validateTrainingFile(lines(10, example), training());
    assert.equal(result.ok, true);
  });

  test("assistant with tool_calls and null or absent content is accepted", () => {
    const absent = { messages: [user, { role: "assistant", tool_calls: [TOOL_CALL] }] };
    const fnCall = { messages: [user, { role: "assistant", content: null, function_call: { name: "f", arguments: "{}" } }] };
    for (const example of [TOOL_EXAMPLE, absent, fnCall]) assert.deepEqual(checkChatExample(example, 1), { ok: true, example });
    assert.match(gpt2.render(TOOL_EXAMPLE as ChatExample), /<\|im_start\|>assistant\n\[\{"id": "call_1"/);
  });

  test("an example longer than the context is rejected, naming the line and the counts", async () => {
    const long = { messages: [user, { role: "assistant", content: "word ".repeat(300) }] };
    const file = lines(12);
    file[3] = JSON.stringify(long);
    const tokens = gpt2.countTokens(long as ChatExample);
    assert.ok(tokens > 256);
    assert.deepEqual(await validateTrainingFile(file, training()), {
      ok: false,
      error: {
        code: "invalid_training_file",
        param: "training_file",
        message: `The job failed due to an invalid training file. Example 4 is too long: it has ${tokens} tokens, but the `
          + "model's context length is 256 tokens. Shorten or remove it; examples are not truncated. (file file-abc, line 4)",
      },
    });
  });
});

describe("tokenizer folders", () => {
  test("Qwen3's own template renders ChatML with its empty think block; the count is stable", async () => {
    const expected = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      + "<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n";
    assert.equal(qwen3.render(KNOWN), expected);
    assert.equal(qwen3.countTokens(KNOWN), qwen3.countText(expected));
    assert.equal(qwen3.countTokens(KNOWN), 26);
    assert.equal(qwen3.contextLength, 2048);
  });

  test("Qwen3 renders tools and tool calls; developer is rendered as system", () => {
    const text = qwen3.render(TOOL_EXAMPLE as ChatExample);
    assert.match(text, /<tools>\n\{"type": "function", "function": \{"name": "get_weather"/);
    assert.match(text, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city":"Paris"\}\}\n<\/tool_call><\|im_end\|>/);
    assert.match(text, /<tool_response>\nsunny\n<\/tool_response>/);
    const developer = { messages: [{ role: "developer", content: "Be brief." }, ...KNOWN.messages.slice(1)] } as ChatExample;
    assert.match(qwen3.render(developer), /^<\|im_start\|>system\nBe brief\.<\|im_end\|>/);
  });

  test("folders are loaded once; a folder without tokenizer.json is an error", async () => {
    const dir = await buildGpt2ChatmlFolder({ parent: path.join(tmp, "again") });
    assert.equal(await loadChatTokenizer(dir), await loadChatTokenizer(dir + "/"));
    await assert.rejects(loadChatTokenizer(path.join(tmp, "missing")), /has no tokenizer\.json/);
  });
});

describe("auto hyperparameters", () => {
  const auto = (nExamples: number) => resolveAutoHyperparameters({ nExamples, requested: { n_epochs: "auto", batch_size: "auto", learning_rate_multiplier: "auto", lora_rank: "auto", lora_alpha: "auto", lora_dropout: "auto" } });
  const loraDefaults = { lora_rank: 16, lora_alpha: 32, lora_dropout: 0.05, quantization: "none" };

  test("10 examples → 10 epochs, batch 1, multiplier 2, and the LoRA defaults", () => {
    assert.deepEqual(auto(10), { n_epochs: 10, batch_size: 1, learning_rate_multiplier: 2, ...loraDefaults });
  });

  test("epochs follow the cookbook estimator", () => {
    const epochs = [1, 20, 33, 34, 1000, 8333, 8334, 12501, 100_000].map((n) => auto(n).n_epochs);
    assert.deepEqual(epochs, [25, 5, 3, 3, 3, 3, 2, 1, 1]);
  });

  test("batch size is 0.2% of the examples, clamped to 1..256, rounded down to a power of two", () => {
    const sizes = [10, 749, 750, 1000, 3000, 5000, 127_000, 1_000_000].map((n) => auto(n).batch_size);
    assert.deepEqual(sizes, [1, 1, 2, 2, 4, 8, 128, 256]);
  });

  test("explicit numbers pass through; absent means auto", () => {
    assert.deepEqual(resolveAutoHyperparameters({ nExamples: 50, requested: { n_epochs: 4, learning_rate_multiplier: 0.5 } }), { n_epochs: 4, batch_size: 1, learning_rate_multiplier: 0.5, ...loraDefaults });
    assert.deepEqual(
      resolveAutoHyperparameters({ nExamples: 50, requested: { lora_rank: 8, lora_alpha: 8, lora_dropout: 0, quantization: "nf4" } }),
      { n_epochs: 3, batch_size: 1, learning_rate_multiplier: 2, lora_rank: 8, lora_alpha: 8, lora_dropout: 0, quantization: "nf4" },
    );
    assert.throws(() => resolveAutoHyperparameters({ nExamples: 0, requested: {} }), RangeError);
  });
});
