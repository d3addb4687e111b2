// Chat completions: resolves the model (a base model, an ft: model or an ft: checkpoint of the
// caller's project), renders the messages with the base model's own chat template, and runs the
// request on the base model's scheduler with the fine-tune's adapter. Everything that can be
// refused is refused before the first byte of a response is written.
import type { Logger } from "pino";
import { newId, nowSeconds } from "../../ids.js";
import type { BaseModels } from "../../jobs/base-models.js";
import * as jobs from "../../jobs/repo.js";
import type { ChatMessage } from "../../jobs/validation/chat-format.js";
import { ServingError, type AdapterRef, type ChatTokenizer, type GeneratedToken, type GenerationEvent, type SamplingParams, type ServingClient, type ServingRouter } from "../../engine/serving/index.js";
import type { Db } from "../../storage/db.js";
import type { ServingMetrics } from "../../metrics/index.js";
import { ApiError } from "../errors.js";
import { KNOWN_FIELDS, chatCompletionChunk, chatCompletionObject, chunkChoice, usage, type ChatCompletionBody, type FinishReason, type Usage, type WireMessage, type WireTokenLogprob } from "./schema.js";

export interface ChatDeps {
  readonly db: Db;
  readonly baseModels: BaseModels;
  /** Picks the backend (in-process ONNX or a vLLM pool) of each base model. */
  readonly router: ServingRouter;
  /** Most sequences queued or running per base model before new requests get 429. */
  readonly maxQueue: number;
  readonly log: Logger;
  readonly metrics?: ServingMetrics;
}

/** A request that passed every check and whose model is loaded: only generation is left. */
export interface PreparedChat {
  readonly id: string;
  readonly created: number;
  readonly model: string;
  readonly client: ServingClient;
  /** The base model's folder name (the metrics' base_model label). */
  readonly baseModel: string;
  readonly tokenizer: ChatTokenizer;
  readonly promptIds: number[];
  readonly adapter: AdapterRef | null;
  readonly n: number;
  readonly maxTokens: number;
  readonly stops: string[];
  readonly sampling: SamplingParams;
  readonly seed: bigint | null;
  readonly includeUsage: boolean;
}

export type StreamWrite = (payload: object | "[DONE]") => void;

function unsupported(param: string, what: string): ApiError {
  return ApiError.badRequest(`${what} is not supported by this server.`, param, "unsupported_parameter");
}

/** Rejects what we cannot honour, naming the parameter, instead of silently ignoring it. */
function checkSupported(raw: Record<string, unknown>, body: ChatCompletionBody): void {
  for (const key of Object.keys(raw)) {
    if (!KNOWN_FIELDS.has(key)) throw ApiError.badRequest(`Unrecognized request argument supplied: ${key}`, key, "unknown_parameter");
  }
  if (body.stream_options && !body.stream) {
    throw ApiError.badRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", "invalid_value");
  }
  if (body.top_logprobs !== null && body.top_logprobs !== undefined && !body.logprobs) {
    throw ApiError.badRequest("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs", "invalid_value");
  }
  const format = body.response_format?.type;
  if (format !== undefined && format !== "text") throw unsupported("response_format.type", `response_format of type '${format}'`);
  if (body.tools && body.tools.length > 0) throw unsupported("tools", "Tool calling");
  if (body.functions && body.functions.length > 0) throw unsupported("functions", "Function calling");
  if (body.modalities && body.modalities.some((m) => m !== "text")) throw unsupported("modalities", "Output other than text");
  if (body.audio !== undefined && body.audio !== null) throw unsupported("audio", "Audio output");
  if (body.web_search_options !== undefined && body.web_search_options !== null) throw unsupported("web_search_options", "Web search");
}

/** Message content as one string; only text parts can be served by a text model. */
export function toChatMessages(messages: WireMessage[]): ChatMessage[] {
  return messages.map((m, i) => {
    let content: string | null = null;
    if (typeof m.content === "string") content = m.content;
    else if (Array.isArray(m.content)) {
      content = m.content
        .map((p, j) => {
          if (p.type !== "text" && p.type !== "refusal") {
            throw ApiError.badRequest(`Content parts of type '${p.type}' are not supported; only 'text' parts are.`, `messages[${i}].content[${j}].type`, "unsupported_parameter");
          }
          const text = p.type === "text" ? p.text : p.refusal;
          if (typeof text !== "string") throw ApiError.badRequest(`Missing required parameter: 'messages[${i}].content[${j}].${p.type}'.`, `messages[${i}].content[${j}].${p.type}`, "missing_required_parameter");
          return text;
        })
        .join("");
    } else if (m.role !== "assistant") {
      throw ApiError.badRequest(`Invalid value for 'content': expected a string or an array of text parts for role '${m.role}'.`, `messages[${i}].content`, "invalid_type");
    } else if (!m.tool_calls && !m.function_call) {
      throw ApiError.badRequest("Invalid value for 'content': an assistant message needs content unless it has tool_calls.", `messages[${i}].content`, "invalid_type");
    }
    if (m.role === "tool" && !m.tool_call_id) throw ApiError.badRequest("Missing required parameter: 'messages[" + i + "].tool_call_id'.", `messages[${i}].tool_call_id`, "missing_required_parameter");
    const out: ChatMessage = { role: m.role, content: content ?? "" };
    if (m.name) out.name = m.name;
    if (m.tool_calls) out.tool_calls = m.tool_calls;
    if (m.tool_call_id) out.tool_call_id = m.tool_call_id;
    return out;
  });
}

/** OpenAI writes a token that is not whole UTF-8 as its bytes, e.g. "bytes:\xe2\x80". */
function tokenString(bytes: number[]): string {
  const buf = Buffer.from(bytes);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(buf);
  if (!text.includes("\uFFFD") || Buffer.from(text, "utf8").equals(buf)) return text;
  return "bytes:" + bytes.map((b) => "\\x" + b.toString(16).padStart(2, "0")).join("");
}

function rethrowServing(err: unknown): never {
  throw err instanceof ServingError ? servingError(err) : err;
}

/** A backend's failure in our envelope: retryable 5xx for the engine's own trouble. */
function servingError(err: ServingError): ApiError {
  switch (err.kind) {
    case "bad_request":
      return ApiError.badRequest(err.message, null, "invalid_value");
    case "context_length":
      return ApiError.badRequest(err.message, "messages", "context_length_exceeded");
    case "unavailable":
      return ApiError.of("engine_unavailable", err.message);
    default:
      return ApiError.of("engine_error", err.message);
  }
}

export class ChatService {
  private readonly active = new Map<string, Set<AbortController>>();

  constructor(private readonly deps: ChatDeps) {}

  /** Everything that can be refused, refused before the first byte; `onBackend` learns the
   *  backend as soon as the model is resolved (the response header names it). */
  async prepare(projectId: string, raw: Record<string, unknown>, body: ChatCompletionBody, onBackend: (name: string) => void = () => undefined): Promise<PreparedChat> {
    checkSupported(raw, body);
    const messages = toChatMessages(body.messages);
    const { client, base, adapter } = await this.resolve(projectId, body.model);
    onBackend(client.backend);
    const tokenizer = await client.tokenizer();
    const { contextLength: context, vocabSize: vocab } = await client.limits().catch(rethrowServing);
    if (client.load >= this.deps.maxQueue) {
      throw ApiError.of("rate_limit_exceeded", "The server is handling as many completions as it can; please retry shortly.");
    }
    let promptIds: number[];
    try {
      promptIds = tokenizer.encodePrompt(messages);
    } catch (err) {
      throw ApiError.badRequest(`The model's chat template cannot render these messages: ${(err as Error).message}`, "messages", "invalid_value");
    }
    const requested = body.max_completion_tokens ?? body.max_tokens ?? null;
    if (promptIds.length >= context || (requested !== null && promptIds.length + requested > context)) {
      const asked = requested === null ? `${promptIds.length} tokens in the messages` : `${promptIds.length + requested} tokens (${promptIds.length} in the messages, ${requested} in the completion)`;
      throw ApiError.badRequest(`This model's maximum context length is ${context} tokens. However, you requested ${asked}. Please reduce the length of the messages or completion.`, "messages", "context_length_exceeded");
    }
    const logitBias = new Map<number, number>();
    for (const [k, v] of Object.entries(body.logit_bias ?? {})) {
      const id = Number(k);
      if (id >= vocab) throw ApiError.badRequest(`Invalid key in 'logit_bias': ${k} is not a token id of this model (vocabulary of ${vocab}).`, "logit_bias", "invalid_value");
      logitBias.set(id, v);
    }
    if (adapter) await client.loadAdapter(adapter).catch(rethrowServing);
    return {
      id: newId.chatCompletion(),
      created: nowSeconds(),
      model: body.model,
      client,
      baseModel: base,
      tokenizer,
      promptIds,
      adapter,
      n: body.n ?? 1,
      maxTokens: requested ?? context - promptIds.length,
      stops: body.stop === null || body.stop === undefined ? [] : [body.stop].flat(),
      sampling: {
        temperature: body.temperature ?? 1,
        topP: body.top_p ?? 1,
        presencePenalty: body.presence_penalty ?? 0,
        frequencyPenalty: body.frequency_penalty ?? 0,
        logitBias,
        topLogprobs: body.logprobs ? (body.top_logprobs ?? 0) : null,
      },
      seed: body.seed === null || body.seed === undefined ? null : BigInt(body.seed),
      includeUsage: body.stream_options?.include_usage === true,
    };
  }

  /** The whole completion as one chat.completion object. */
  async complete(p: PreparedChat, signal: AbortSignal) {
    const logprobs: WireTokenLogprob[][] = Array.from({ length: p.n }, () => []);
    const result = await this.run(p, signal, (e) => logprobs[e.index]!.push(...this.wireLogprobs(p, e.logprobs)));
    const choices = result.texts.map((text, index) => ({ text, finish: result.finishes[index]!, logprobs: p.sampling.topLogprobs === null ? null : logprobs[index]! }));
    return chatCompletionObject(p, choices, usage(p.promptIds.length, result.completionTokens));
  }

  /** The completion as chat.completion.chunk payloads, then "[DONE]". A failure after the first
   *  chunk becomes an `error` payload, which both SDKs raise as APIError. */
  async stream(p: PreparedChat, signal: AbortSignal, write: StreamWrite): Promise<void> {
    const chunk = (choices: object[], u?: Usage) => chatCompletionChunk(p, p.includeUsage, choices, u);
    for (let index = 0; index < p.n; index++) write(chunk([chunkChoice.first(index)]));
    try {
      const result = await this.run(p, signal, (e) => {
        const lp = this.wireLogprobs(p, e.logprobs);
        if (e.delta !== "" || lp.length > 0) {
          write(chunk([chunkChoice.text(e.index, e.delta, p.sampling.topLogprobs === null ? null : lp)]));
        }
        if (e.finish) write(chunk([chunkChoice.finish(e.index, e.finish)]));
      });
      if (p.includeUsage) write(chunk([], usage(p.promptIds.length, result.completionTokens)));
      write("[DONE]");
    } catch (err) {
      if (signal.aborted && !(signal.reason instanceof ApiError)) return;
      const apiError = err instanceof ApiError ? err : ApiError.internal();
      if (!(err instanceof ApiError)) this.deps.log.error({ err }, "generation failed mid-stream");
      write(apiError.toJSON());
    }
  }

  /** A deleted fine-tune stops at once: its running requests end, its adapter is unloaded. */
  async evictModel(id: string): Promise<void> {
    for (const c of this.active.get(id) ?? []) c.abort(ApiError.notFound(`The model '${id}' was deleted.`, "model", "model_not_found"));
    this.active.delete(id);
    await this.deps.router.unloadAdapter(id);
  }

  private async run(p: PreparedChat, signal: AbortSignal, onEvent: (e: GenerationEvent) => void) {
    const own = new AbortController();
    const abort = () => own.abort(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    const set = this.active.get(p.model) ?? new Set();
    set.add(own);
    this.active.set(p.model, set);
    const texts = Array.from({ length: p.n }, () => "");
    const finishes: FinishReason[] = [];
    let completionTokens = 0;
    const observed = this.deps.metrics?.request(p.client.backend, p.baseModel);
    try {
      const events = p.client.generate({
        promptIds: p.promptIds, adapter: p.adapter, n: p.n, maxTokens: p.maxTokens,
        stops: p.stops, sampling: p.sampling, seed: p.seed, signal: own.signal,
      });
      for await (const e of events) {
        texts[e.index] += e.delta;
        completionTokens += e.tokens;
        if (e.finish) finishes[e.index] = e.finish;
        // Latencies of the first choice: with n > 1 the others step in the same batches.
        if (e.index === 0 && (e.delta !== "" || e.logprobs.length > 0)) observed?.token();
        onEvent(e);
      }
      observed?.done(p.promptIds.length, completionTokens);
      return { texts, finishes, completionTokens };
    } catch (err) {
      if (own.signal.aborted && own.signal.reason instanceof ApiError) throw own.signal.reason;
      return rethrowServing(err);
    } finally {
      // Whatever ended the loop (done, a failure here, the caller gone): the backend stops too.
      own.abort();
      signal.removeEventListener("abort", abort);
      set.delete(own);
      if (set.size === 0 && this.active.get(p.model) === set) this.active.delete(p.model);
    }
  }

  private wireLogprobs(p: PreparedChat, tokens: readonly GeneratedToken[]): WireTokenLogprob[] {
    const wire = (id: number, logprob: number) => {
      const bytes = p.tokenizer.tokenBytes(id);
      return { token: tokenString(bytes), logprob, bytes };
    };
    return tokens.map((t) => ({ ...wire(t.id, t.logprob), top_logprobs: t.top.map((x) => wire(x.id, x.logprob)) }));
  }

  private async resolve(projectId: string, model: string): Promise<{ client: ServingClient; base: string; adapter: AdapterRef | null }> {
    const notFound = () => ApiError.notFound(`The model '${model}' does not exist or you do not have access to it.`, "model", "model_not_found");
    if (!model.startsWith("ft:")) {
      const base = await this.deps.baseModels.get(model);
      const why = base ? undefined : await this.deps.baseModels.incomplete(model);
      if (why) throw ApiError.notFound(why, "model", "model_not_found");
      if (!base) throw notFound();
      return { client: this.deps.router.client(base.id, base.dir), base: base.id, adapter: null };
    }
    const row = await jobs.getModel(this.deps.db, projectId, model);
    if (!row) throw notFound();
    const base = await this.deps.baseModels.get(row.baseModel);
    if (!base) throw ApiError.notFound(`The base model '${row.baseModel}' of '${model}' is no longer installed on this server.`, "model", "model_not_found");
    return { client: this.deps.router.client(base.id, base.dir), base: base.id, adapter: { id: row.id, blobPrefix: row.blobPrefix, files: row.files as string[] } };
  }
}
