// The DPO (preference) file validator (src/jobs/validation/preference-format.ts through
// validateTrainingFile): every failure with OpenAI's code, the example and the line; the older
// *_completion names; token counts of both outputs against the base model's context.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { ChatExample } from "../src/jobs/validation/chat-format.js";
import { checkPreferenceExample } from "../src/jobs/validation/preference-format.js";
import { loadChatTokenizer, type ChatTokenizer } from "../src/jobs/validation/tokenizer.js";
import { validateTrainingFile, type ValidateFileOptions } from "../src/jobs/validation/validate-file.js";
import { buildGpt2ChatmlFolder } from "./helpers/tiny-models.js";

const user = { role: "user", content: "Name a fruit." };
const good = { role: "assistant", content: "Apple. Done" };
const bad = { role: "assistant", content: "Hmm, maybe a banana or so?" };
const PAIR = { input: { messages: [{ role: "system", content: "Be brief." }, user] }, preferred_output: [good], non_preferred_output: [bad] };

let tmp: string;
let gpt2: ChatTokenizer;

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "openft-dpo-validation-"));
  gpt2 = await loadChatTokenizer(await buildGpt2ChatmlFolder({ parent: tmp, maxPositionEmbeddings: 256 }));
});
after(async () => rm(tmp, { recursive: true, force: true }));

const opts = (): ValidateFileOptions => ({ fileId: "file-dpo", param: "training_file", tokenizer: gpt2, minExamples: 10, format: "preference" });
const lines = (n: number, example: unknown = PAIR) => Array.from({ length: n }, () => JSON.stringify(example));
function fileWith(badLine: unknown): string[] {
  const out = lines(12);
  out[4] = typeof badLine === "string" ? badLine : JSON.stringify(badLine);
  return out;
}

const CASES: [string, unknown, string][] = [
  ["invalid JSON", "{\"input\": ", "Example 5, Expected file to have JSONL format, where every line is a valid JSON dictionary"],
  ["not an object", "3", "Example 5, Expected a JSON object, got number"],
  ["a chat example instead of a pair", { messages: [user, good] }, "Example 5, Unexpected format, expected a preference example: field 'input' is missing"],
  ["input not an object", { ...PAIR, input: [user] }, "Example 5, Field 'input' must be an object, got array"],
  ["input without messages", { ...PAIR, input: {} }, "Example 5, Field 'input.messages' must be a non-empty array"],
  ["an input message without role", { ...PAIR, input: { messages: [{ content: "x" }] } }, "Example 5, input message 1 Discriminator 'role' is missing in value"],
  ["malformed input tools", { ...PAIR, input: { messages: [user], tools: [{ type: "function" }] } }, "Example 5, input Tool 1 must be {type: 'function', function: {name, description?, parameters?}}"],
  ["parallel_tool_calls not boolean", { ...PAIR, input: { messages: [user], parallel_tool_calls: 1 } }, "Example 5, Field 'input.parallel_tool_calls' must be a boolean"],
  ["input ending with the assistant", { ...PAIR, input: { messages: [user, good] } }, "Example 5, The last input message must not be an assistant message: the outputs are the assistant's reply to the input"],
  ["no preferred output", { input: PAIR.input, non_preferred_output: [bad] }, "Example 5, Unexpected format, expected a preference example: field 'preferred_output' is missing"],
  ["no non-preferred output", { input: PAIR.input, preferred_output: [good] }, "Example 5, Unexpected format, expected a preference example: field 'non_preferred_output' is missing"],
  ["both names of one output", { ...PAIR, preferred_completion: [good] }, "Example 5, Give 'preferred_output' or its older name 'preferred_completion', not both"],
  ["two preferred messages", { ...PAIR, preferred_output: [good, good] }, "Example 5, Field 'preferred_output' must be an array holding exactly one assistant message, got 2 messages"],
  ["an output that is no array", { ...PAIR, non_preferred_output: bad }, "Example 5, Field 'non_preferred_output' must be an array holding exactly one assistant message, got object"],
  ["a user message as output", { ...PAIR, preferred_output: [user] }, "Example 5, preferred_output message 1 Must be an assistant message, got role 'user'"],
  ["an output message with a bad key", { ...PAIR, non_preferred_output: [{ ...bad, contents: "x" }] }, "Example 5, non_preferred_output message 1 Unrecognized key 'contents'; allowed keys are role, content, name, weight, tool_calls, function_call, tool_call_id, refusal"],
  ["an output with null content", { ...PAIR, non_preferred_output: [{ role: "assistant", content: null }] }, "Example 5, non_preferred_output message 1 Field 'content' is required unless the assistant message has 'tool_calls' or 'function_call'"],
  ["an output of weight 0", { ...PAIR, preferred_output: [{ ...good, weight: 0 }] }, "Example 5, preferred_output message 1 Field 'weight' must not be 0 on an output: the output is what is trained"],
  ["identical outputs", { ...PAIR, non_preferred_output: [good] }, "Example 5, The preferred and non-preferred outputs are identical, so there is no preference to learn"],
];

describe("DPO file format failures", () => {
  for (const [name, badLine, problem] of CASES) {
    test(name, async () => {
      assert.deepEqual(await validateTrainingFile(fileWith(badLine), opts()), {
        ok: false,
        error: {
          code: "invalid_training_file",
          param: "training_file",
          message: `The job failed due to an invalid training file. Invalid file format. ${problem} (file file-dpo, line 5)`,
        },
      });
    });
  }

  test("9 pairs → invalid_n_examples", async () => {
    assert.deepEqual(await validateTrainingFile(lines(9), opts()), {
      ok: false,
      error: { code: "invalid_n_examples", param: "training_file", message: "Training file has 9 example(s), but must have at least 10 examples (file file-dpo)" },
    });
  });

  test("an output too long for the context names the example and both counts", async () => {
    const long = { ...PAIR, non_preferred_output: [{ role: "assistant", content: "word ".repeat(300) }] };
    const tokens = gpt2.countTokens({ messages: [...PAIR.input.messages, long.non_preferred_output[0]] } as ChatExample);
    assert.ok(tokens > 256);
    const result = await validateTrainingFile(fileWith(long), opts());
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.error.message, `The job failed due to an invalid training file. Example 5 is too long: it has ${tokens} tokens, `
      + "but the model's context length is 256 tokens. Shorten or remove it; examples are not truncated. (file file-dpo, line 5)");
  });

  test("a chat file checked as chat still passes; a preference file checked as chat fails", async () => {
    const chat = lines(10, { messages: [user, good] });
    assert.equal((await validateTrainingFile(chat, { ...opts(), format: "chat" })).ok, true);
    const asChat = await validateTrainingFile(lines(10), { ...opts(), format: "chat" });
    assert.match(!asChat.ok ? asChat.error.message : "", /field 'messages' is missing/);
  });
});

describe("valid DPO files", () => {
  test("10 pairs, half with the older names and tools: tokens are both outputs' conversations", async () => {
    const tools = [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }];
    const older = { input: { messages: [user], tools, parallel_tool_calls: false }, preferred_completion: [good], non_preferred_completion: [bad] };
    const file = [...lines(5), ...lines(5, older)];
    const count = (input: { messages: unknown[]; tools?: unknown }, output: unknown) =>
      gpt2.countTokens({ ...input, messages: [...input.messages, output] } as ChatExample);
    const a = count(PAIR.input, good) + count(PAIR.input, bad);
    const b = count({ messages: [user], tools }, good) + count({ messages: [user], tools }, bad);
    const max = Math.max(count(PAIR.input, bad), count({ messages: [user], tools }, bad));
    assert.deepEqual(await validateTrainingFile(file, opts()), { ok: true, nExamples: 10, totalTokens: 5 * a + 5 * b, maxTokens: max });
  });

  test("an input with earlier assistant turns and tool calls is fine", () => {
    const call = { id: "c1", type: "function", function: { name: "lookup", arguments: "{}" } };
    const input = { messages: [user, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: "c1", content: "apple" }] };
    const checked = checkPreferenceExample({ input, preferred_output: [good], non_preferred_output: [bad] }, 1);
    assert.equal(checked.ok, true);
  });
});
