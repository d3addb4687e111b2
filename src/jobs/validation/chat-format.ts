// One line of a supervised fine-tuning file, checked against OpenAI's chat format
// (the 2025-05 OpenAI spec's `FineTuneChatRequestInput`). Problems are worded the
// way the live API words them where a wording was observed ("Example 100, message 2 Discriminator
// 'role' is missing in value"), and in the same "Example N, message M <problem>" shape otherwise.

export const CHAT_ROLES = ["system", "developer", "user", "assistant", "tool", "function"] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

export interface TextPart {
  type: "text";
  text: string;
}

export interface ChatMessage {
  role: ChatRole;
  content?: string | TextPart[] | null;
  name?: string;
  weight?: 0 | 1;
  tool_calls?: unknown[];
  function_call?: unknown;
  tool_call_id?: string;
  refusal?: string | null;
}

export interface ChatTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface ChatExample {
  messages: ChatMessage[];
  tools?: ChatTool[];
  parallel_tool_calls?: boolean;
}

export type ChatFormatCheck = { ok: true; example: ChatExample } | { ok: false; message: string };

const MESSAGE_KEYS = new Set([
  "role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id", "refusal",
]);
// Keys that belong to one role only, as in the spec's per-role message schemas.
const ROLE_ONLY_KEYS: Record<string, ChatRole> = {
  weight: "assistant", tool_calls: "assistant", function_call: "assistant", refusal: "assistant",
  tool_call_id: "tool",
};
const TOOL_FUNCTION_KEYS = new Set(["name", "description", "parameters", "strict"]);

export type Problem = string | null;

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function describe(value: unknown): string {
  if (value === null) return "null";
  return Array.isArray(value) ? "array" : typeof value;
}

/** Joins text parts without a separator: the parts are pieces of one text, and inventing a
 *  separator would train on characters the user never wrote. The trainer must use the same rule. */
export function flattenContent(content: ChatMessage["content"]): string {
  if (content === null || content === undefined) return "";
  if (typeof content === "string") return content;
  return content.map((part) => part.text).join("");
}

function checkContentParts(parts: unknown[]): Problem {
  if (parts.length === 0) return "Field 'content' must not be an empty array";
  for (const [i, part] of parts.entries()) {
    if (!isObject(part)) return `Content part ${i + 1} must be an object, got ${describe(part)}`;
    if (part.type !== "text") {
      return `Content part ${i + 1} has type '${String(part.type)}'; only 'text' parts are supported`;
    }
    if (typeof part.text !== "string") return `Content part ${i + 1} needs a string 'text'`;
    const extra = Object.keys(part).find((key) => key !== "type" && key !== "text");
    if (extra !== undefined) return `Content part ${i + 1} has unrecognized key '${extra}'`;
  }
  return null;
}

function checkContent(message: Record<string, unknown>): Problem {
  const { content } = message;
  if (content === undefined || content === null) {
    const callsTool = (Array.isArray(message.tool_calls) && message.tool_calls.length > 0)
      || isObject(message.function_call);
    if (message.role === "assistant" && callsTool) return null;
    return message.role === "assistant"
      ? "Field 'content' is required unless the assistant message has 'tool_calls' or 'function_call'"
      : "Field 'content' is required";
  }
  if (typeof content === "string") return null;
  if (Array.isArray(content)) return checkContentParts(content);
  return `Field 'content' must be a string or an array of text parts, got ${describe(content)}`;
}

function checkToolCalls(calls: unknown): Problem {
  if (!Array.isArray(calls)) return `Field 'tool_calls' must be an array, got ${describe(calls)}`;
  for (const [i, call] of calls.entries()) {
    const fn = isObject(call) ? call.function : undefined;
    if (!isObject(call) || call.type !== "function" || typeof call.id !== "string" || !isObject(fn)
      || typeof fn.name !== "string" || typeof fn.arguments !== "string") {
      return `Tool call ${i + 1} must be {id, type: 'function', function: {name, arguments}} with string name and arguments`;
    }
  }
  return null;
}

function checkFunctionCall(call: unknown): Problem {
  if (isObject(call) && typeof call.name === "string" && typeof call.arguments === "string") return null;
  return "Field 'function_call' must be {name, arguments} with string name and arguments";
}

function checkRole(message: Record<string, unknown>): Problem {
  if (!("role" in message)) return "Discriminator 'role' is missing in value";
  if (typeof message.role === "string" && (CHAT_ROLES as readonly string[]).includes(message.role)) return null;
  const expected = CHAT_ROLES.map((r) => `'${r}'`).join(", ");
  return `Input tag '${String(message.role)}' found using 'role' does not match any of the expected tags: ${expected}`;
}

function checkKeys(message: Record<string, unknown>): Problem {
  for (const key of Object.keys(message)) {
    if (!MESSAGE_KEYS.has(key)) {
      return `Unrecognized key '${key}'; allowed keys are ${[...MESSAGE_KEYS].join(", ")}`;
    }
    const onlyFor = ROLE_ONLY_KEYS[key];
    if (onlyFor !== undefined && message.role !== onlyFor) {
      return `Field '${key}' is only allowed on ${onlyFor} messages, not on a ${String(message.role)} message`;
    }
  }
  return null;
}

function checkFields(message: Record<string, unknown>): Problem {
  if ("name" in message && typeof message.name !== "string") return "Field 'name' must be a string";
  if ("weight" in message && message.weight !== 0 && message.weight !== 1) {
    return `Field 'weight' must be 0 or 1, got ${JSON.stringify(message.weight)}`;
  }
  if (message.role === "tool" && typeof message.tool_call_id !== "string") {
    return "Field 'tool_call_id' is required on tool messages and must be a string";
  }
  if ("refusal" in message && message.refusal !== null && typeof message.refusal !== "string") {
    return "Field 'refusal' must be a string or null";
  }
  if ("tool_calls" in message) {
    const problem = checkToolCalls(message.tool_calls);
    if (problem) return problem;
  }
  if ("function_call" in message) return checkFunctionCall(message.function_call);
  return null;
}

export function checkMessage(message: unknown): Problem {
  if (!isObject(message)) return `Expected a message object, got ${describe(message)}`;
  return checkRole(message) ?? checkKeys(message) ?? checkFields(message) ?? checkContent(message);
}

export function checkTools(tools: unknown): Problem {
  if (!Array.isArray(tools)) return `Field 'tools' must be an array, got ${describe(tools)}`;
  for (const [i, tool] of tools.entries()) {
    const fn = isObject(tool) ? tool.function : undefined;
    if (!isObject(tool) || tool.type !== "function" || !isObject(fn) || typeof fn.name !== "string") {
      return `Tool ${i + 1} must be {type: 'function', function: {name, description?, parameters?}}`;
    }
    const extra = Object.keys(fn).find((key) => !TOOL_FUNCTION_KEYS.has(key));
    if (extra !== undefined) return `Tool ${i + 1} function has unrecognized key '${extra}'`;
    if ("description" in fn && typeof fn.description !== "string") {
      return `Tool ${i + 1} function 'description' must be a string`;
    }
    if ("parameters" in fn && !isObject(fn.parameters)) return `Tool ${i + 1} function 'parameters' must be an object`;
  }
  return null;
}

function checkExampleFields(line: Record<string, unknown>): Problem {
  if (!("messages" in line)) {
    return "Unexpected format, expected chat messages: field 'messages' is missing";
  }
  if (!Array.isArray(line.messages) || line.messages.length === 0) {
    return "Field 'messages' must be a non-empty array";
  }
  if ("tools" in line) {
    const problem = checkTools(line.tools);
    if (problem) return problem;
  }
  if ("parallel_tool_calls" in line && typeof line.parallel_tool_calls !== "boolean") {
    return "Field 'parallel_tool_calls' must be a boolean";
  }
  return null;
}

/**
 * Checks one parsed JSONL line. `exampleNumber` is 1-based and only used in the message.
 * Unknown top-level keys are tolerated (datasets often carry ids or metadata that do not change
 * what is trained); unknown message keys are not, because they usually mean a typo in a key that
 * does matter (`contents`, `weights`).
 */
export function checkChatExample(line: unknown, exampleNumber: number): ChatFormatCheck {
  const fail = (where: string, problem: string): ChatFormatCheck => ({ ok: false, message: `${where} ${problem}` });
  const at = `Example ${exampleNumber},`;
  if (!isObject(line)) return fail(at, `Expected a JSON object, got ${describe(line)}`);
  const exampleProblem = checkExampleFields(line);
  if (exampleProblem) return fail(at, exampleProblem);
  const messages = line.messages as unknown[];
  for (const [i, message] of messages.entries()) {
    const problem = checkMessage(message);
    if (problem) return fail(`${at} message ${i + 1}`, problem);
  }
  const trainable = (messages as ChatMessage[]).some((m) => m.role === "assistant" && m.weight !== 0);
  if (!trainable) {
    return fail(at, "No trainable assistant message: at least one assistant message must have weight 1 or no weight");
  }
  return { ok: true, example: line as unknown as ChatExample };
}
