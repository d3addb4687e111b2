// One line of a DPO (preference) file, checked against OpenAI's format (openai-contract.md §11.1):
// {"input": {"messages", "tools"?, "parallel_tool_calls"?}, "preferred_output": [assistant message],
// "non_preferred_output": [assistant message]}. The April 2025 spec's names
// `preferred_completion`/`non_preferred_completion` are accepted as aliases. Problems use the chat
// checker's "Example N, <where> <problem>" shape and its message rules.
import { checkMessage, checkTools, describe, isObject, type ChatExample, type ChatMessage, type Problem } from "./chat-format.js";

export interface PreferenceExample {
  input: ChatExample;
  preferred: ChatMessage;
  nonPreferred: ChatMessage;
}

export type PreferenceFormatCheck = { ok: true; example: PreferenceExample } | { ok: false; message: string };

const OUTPUTS = [
  { name: "preferred_output", alias: "preferred_completion" },
  { name: "non_preferred_output", alias: "non_preferred_completion" },
] as const;

type Located = { where: string; problem: string };

function checkInput(input: unknown): Located | null {
  if (input === undefined) return { where: "", problem: "Unexpected format, expected a preference example: field 'input' is missing" };
  if (!isObject(input)) return { where: "", problem: `Field 'input' must be an object, got ${describe(input)}` };
  if (!Array.isArray(input.messages) || input.messages.length === 0) {
    return { where: "", problem: "Field 'input.messages' must be a non-empty array" };
  }
  if ("tools" in input) {
    const problem = checkTools(input.tools);
    if (problem) return { where: "input", problem };
  }
  if ("parallel_tool_calls" in input && typeof input.parallel_tool_calls !== "boolean") {
    return { where: "", problem: "Field 'input.parallel_tool_calls' must be a boolean" };
  }
  for (const [i, message] of input.messages.entries()) {
    const problem = checkMessage(message);
    if (problem) return { where: `input message ${i + 1}`, problem };
  }
  if ((input.messages.at(-1) as ChatMessage).role === "assistant") {
    return { where: "", problem: "The last input message must not be an assistant message: the outputs are the assistant's reply to the input" };
  }
  return null;
}

/** The one assistant message of an output field, under either of its names. */
function pickOutput(line: Record<string, unknown>, name: string, alias: string): { message: ChatMessage } | Located {
  if (name in line && alias in line) return { where: "", problem: `Give '${name}' or its older name '${alias}', not both` };
  const key = name in line ? name : alias;
  const value = line[key];
  if (value === undefined) return { where: "", problem: `Unexpected format, expected a preference example: field '${name}' is missing` };
  if (!Array.isArray(value) || value.length !== 1) {
    const got = Array.isArray(value) ? `${value.length} messages` : describe(value);
    return { where: "", problem: `Field '${key}' must be an array holding exactly one assistant message, got ${got}` };
  }
  const problem: Problem = checkMessage(value[0]);
  if (problem) return { where: `${key} message 1`, problem };
  const message = value[0] as ChatMessage;
  if (message.role !== "assistant") {
    return { where: `${key} message 1`, problem: `Must be an assistant message, got role '${message.role}'` };
  }
  if (message.weight === 0) return { where: `${key} message 1`, problem: "Field 'weight' must not be 0 on an output: the output is what is trained" };
  return { message };
}

/** Checks one parsed JSONL line of a DPO file. `exampleNumber` is 1-based, for the message only. */
export function checkPreferenceExample(line: unknown, exampleNumber: number): PreferenceFormatCheck {
  const fail = ({ where, problem }: Located): PreferenceFormatCheck => ({
    ok: false,
    message: `Example ${exampleNumber},${where ? ` ${where}` : ""} ${problem}`,
  });
  if (!isObject(line)) return fail({ where: "", problem: `Expected a JSON object, got ${describe(line)}` });
  const inputProblem = checkInput(line.input);
  if (inputProblem) return fail(inputProblem);
  const outputs: ChatMessage[] = [];
  for (const { name, alias } of OUTPUTS) {
    const picked = pickOutput(line, name, alias);
    if (!("message" in picked)) return fail(picked);
    outputs.push(picked.message);
  }
  const [preferred, nonPreferred] = outputs as [ChatMessage, ChatMessage];
  if (JSON.stringify(preferred) === JSON.stringify(nonPreferred)) {
    return fail({ where: "", problem: "The preferred and non-preferred outputs are identical, so there is no preference to learn" });
  }
  const input = line.input as Record<string, unknown>;
  const chat: ChatExample = { messages: input.messages as ChatMessage[] };
  if (input.tools !== undefined) chat.tools = input.tools as ChatExample["tools"];
  return { ok: true, example: { input: chat, preferred, nonPreferred } };
}

/** The conversation the model is trained on for one output: the input turns, then that output. */
export function withOutput(input: ChatExample, output: ChatMessage): ChatExample {
  return { ...input, messages: [...input.messages, output] };
}
