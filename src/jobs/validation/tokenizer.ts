// Counts the tokens of a training example the way the trainer will see it: rendered with the base
// model's own chat template, then encoded with its own tokenizer, both read from the Hugging Face
// model folder and run offline by @huggingface/tokenizers and @huggingface/jinja (the standalone
// pieces: no transformers.js, no hub access).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { flattenContent, type ChatExample, type ChatMessage } from "./chat-format.js";

export interface ChatTokenizer {
  /** Longest sequence the model was trained on (config.json), the per-example token cap. */
  readonly contextLength: number;
  /** The example rendered by the chat template, with no generation prompt appended. */
  render(example: ChatExample): string;
  /** Tokens in already-rendered text; special-token strings count as one token each. */
  countText(text: string): number;
  /** countText(render(example)). */
  countTokens(example: ChatExample): number;
  /** What the model is asked to continue when serving: the messages (and tools) rendered with the
   *  generation prompt appended, encoded the same way training encodes them. */
  encodePrompt(messages: ChatMessage[], tools?: ChatExample["tools"]): number[];
  /** Text of generated ids, special tokens left out (they are never content). */
  decode(ids: readonly number[]): string;
  /** The token's own bytes (a byte-level BPE token may be part of one UTF-8 character). */
  tokenBytes(id: number): number[];
  /** Ids that end a reply: every eos_token_id of config.json and generation_config.json, and the
   *  tokenizer's eos token. */
  readonly stopTokenIds: ReadonlySet<number>;
}

type Json = Record<string, unknown>;

// Where transformers and multimodal configs keep the context length, most specific first.
const CONTEXT_KEYS = ["max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"];

async function readJson(file: string): Promise<Json | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as Json;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** transformers 5 saves the template as chat_template.jinja and it wins over tokenizer_config;
 *  older folders keep a string, or a list of named templates, in tokenizer_config.chat_template. */
async function loadChatTemplate(modelDir: string, tokenizerConfig: Json): Promise<string> {
  const file = await readText(path.join(modelDir, "chat_template.jinja"));
  if (file !== undefined) return file;
  const fromConfig = tokenizerConfig.chat_template;
  if (typeof fromConfig === "string") return fromConfig;
  if (Array.isArray(fromConfig)) {
    const named = fromConfig.find((t: Json) => t.name === "default") as Json | undefined;
    if (typeof named?.template === "string") return named.template;
  }
  throw new Error(`${modelDir} has no chat template (chat_template.jinja or tokenizer_config.chat_template)`);
}

function contextLengthOf(config: Json, modelDir: string): number {
  const text = config.text_config;
  for (const source of [config, typeof text === "object" && text !== null ? (text as Json) : {}]) {
    for (const key of CONTEXT_KEYS) {
      const value = source[key];
      if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
    }
  }
  throw new Error(`${modelDir}/config.json does not state a context length (${CONTEXT_KEYS.join(", ")})`);
}

/** tokenizer_config stores special tokens either as strings or as serialized AddedTokens. */
function tokenString(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null && typeof (value as Json).content === "string") {
    return (value as Json).content as string;
  }
  return undefined;
}

/**
 * The message as chat templates expect it: content flattened to one string and null content
 * turned into "" (templates such as Qwen3's do `'</think>' in message.content`, which fails on
 * null). `developer` is OpenAI's newer name for `system`, and templates only know `system`, so
 * it is renamed rather than silently dropped. `weight` and `refusal` are not template inputs.
 */
function templateMessage(message: ChatMessage): Json {
  const out: Json = {
    role: message.role === "developer" ? "system" : message.role,
    content: flattenContent(message.content),
  };
  for (const key of ["name", "tool_calls", "function_call", "tool_call_id"] as const) {
    if (message[key] !== undefined) out[key] = message[key];
  }
  return out;
}

// GPT-2's byte-level alphabet: every byte is written as one printable character in token strings.
let byteLevelInverse: Map<string, number> | undefined;
function byteLevelDecoder(): Map<string, number> {
  if (byteLevelInverse) return byteLevelInverse;
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map.set(String.fromCodePoint(printable.includes(b) ? b : 256 + extra++), b);
  }
  byteLevelInverse = map;
  return map;
}

function usesByteLevel(tokenizerJson: Json): boolean {
  const decoder = tokenizerJson.decoder as Json | null | undefined;
  if (!decoder) return false;
  if (decoder.type === "ByteLevel") return true;
  return Array.isArray(decoder.decoders) && (decoder.decoders as Json[]).some((d) => d.type === "ByteLevel");
}

function eosIds(values: unknown[]): number[] {
  return values.flatMap((v) => (Array.isArray(v) ? v : [v])).filter((v): v is number => Number.isInteger(v));
}

interface ServingParts {
  byteLevel: boolean;
  eosTokenIds: number[];
}

function buildChatTokenizer(tokenizer: Tokenizer, template: Template, tokenizerConfig: Json, contextLength: number, serving: ServingParts): ChatTokenizer {
  const specials = {
    bos_token: tokenString(tokenizerConfig.bos_token) ?? "",
    eos_token: tokenString(tokenizerConfig.eos_token) ?? "",
  };
  const render = (example: ChatExample): string => template.render({
    ...specials,
    messages: example.messages.map(templateMessage),
    ...(example.tools ? { tools: example.tools } : {}),
    add_generation_prompt: false,
  });
  // add_special_tokens is false because the template already wrote every special token (BOS,
  // <|im_start|>, ...) into the text; letting the post-processor add them again would count a
  // second BOS on Llama-style tokenizers. transformers' apply_chat_template(tokenize=True) does the same.
  const countText = (text: string): number => tokenizer.encode(text, { add_special_tokens: false }).ids.length;
  const encodePrompt = (messages: ChatMessage[], tools?: ChatExample["tools"]): number[] => {
    const text = template.render({ ...specials, messages: messages.map(templateMessage), ...(tools ? { tools } : {}), add_generation_prompt: true });
    return tokenizer.encode(text, { add_special_tokens: false }).ids;
  };
  const decode = (ids: readonly number[]): string =>
    tokenizer.decode([...ids], { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  const byteMap = serving.byteLevel ? byteLevelDecoder() : undefined;
  const tokenBytes = (id: number): number[] => {
    const piece = tokenizer.id_to_token(id) ?? "";
    const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (hex) return [parseInt(hex[1]!, 16)];
    if (byteMap && [...piece].every((c) => byteMap.has(c))) return [...piece].map((c) => byteMap.get(c)!);
    return [...Buffer.from(piece.replaceAll("\u2581", " "), "utf8")];
  };
  const eosToken = specials.eos_token ? tokenizer.token_to_id(specials.eos_token) : undefined;
  const stopTokenIds = new Set([...serving.eosTokenIds, ...(eosToken === undefined ? [] : [eosToken])]);
  return { contextLength, render, countText, countTokens: (example) => countText(render(example)), encodePrompt, decode, tokenBytes, stopTokenIds };
}

async function load(modelDir: string): Promise<ChatTokenizer> {
  const tokenizerJson = await readJson(path.join(modelDir, "tokenizer.json"));
  if (!tokenizerJson) throw new Error(`${modelDir} has no tokenizer.json`);
  const tokenizerConfig = (await readJson(path.join(modelDir, "tokenizer_config.json"))) ?? {};
  const config = await readJson(path.join(modelDir, "config.json"));
  if (!config) throw new Error(`${modelDir} has no config.json`);
  const template = new Template(await loadChatTemplate(modelDir, tokenizerConfig));
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const generation = (await readJson(path.join(modelDir, "generation_config.json"))) ?? {};
  const serving = { byteLevel: usesByteLevel(tokenizerJson), eosTokenIds: eosIds([config.eos_token_id, generation.eos_token_id]) };
  return buildChatTokenizer(tokenizer, template, tokenizerConfig, contextLengthOf(config, modelDir), serving);
}

// Loading a real tokenizer.json takes about a second (Qwen3: 11 MB), so each folder is loaded once
// per process. A failed load is forgotten so that a fixed folder can be retried.
const cache = new Map<string, Promise<ChatTokenizer>>();

export function loadChatTokenizer(modelDir: string): Promise<ChatTokenizer> {
  const key = path.resolve(modelDir);
  let entry = cache.get(key);
  if (!entry) {
    entry = load(key);
    cache.set(key, entry);
    entry.catch(() => cache.delete(key));
  }
  return entry;
}
