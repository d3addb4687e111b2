// Wire shapes of POST /v1/chat/completions (as openapi.yaml describes them): the request as the SDKs send
// it, and the response and stream chunk builders.
import { z } from "zod";

const part = z.object({ type: z.string() }).passthrough();
const content = z.union([z.string(), z.array(part).min(1)]);

const message = z
  .object({
    role: z.enum(["developer", "system", "user", "assistant", "tool", "function"]),
    content: content.nullish(),
    name: z.string().nullish(),
    tool_calls: z.array(z.unknown()).nullish(),
    tool_call_id: z.string().nullish(),
    function_call: z.unknown().optional(),
    refusal: z.string().nullish(),
    audio: z.unknown().optional(),
  })
  .passthrough();
export type WireMessage = z.infer<typeof message>;

const num = (lo: number, hi: number) => z.number().min(lo).max(hi).nullish();

/** Every field OpenAI documents, so that anything else is an unrecognized argument. */
export const chatCompletionBody = z.object({
  model: z.string().min(1),
  messages: z.array(message).min(1),
  max_completion_tokens: z.number().int().min(1).nullish(),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: num(0, 2),
  top_p: num(0, 1),
  n: z.number().int().min(1).max(128).nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
  seed: z.number().int().min(-(2 ** 63)).max(2 ** 63).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish(), include_obfuscation: z.boolean().nullish() }).passthrough().nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  presence_penalty: num(-2, 2),
  frequency_penalty: num(-2, 2),
  logit_bias: z.record(z.string().regex(/^\d+$/, "logit_bias keys must be token ids"), z.number().int().min(-100).max(100)).nullish(),
  response_format: z.object({ type: z.string() }).passthrough().nullish(),
  tools: z.array(z.unknown()).nullish(),
  tool_choice: z.unknown().optional(),
  parallel_tool_calls: z.boolean().nullish(),
  functions: z.array(z.unknown()).nullish(),
  function_call: z.unknown().optional(),
  modalities: z.array(z.string()).nullish(),
  audio: z.unknown().optional(),
  prediction: z.unknown().optional(),
  web_search_options: z.unknown().optional(),
  // Accepted and ignored: they do not change what the model answers.
  user: z.string().nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  store: z.boolean().nullish(),
  service_tier: z.string().nullish(),
  reasoning_effort: z.string().nullish(),
  verbosity: z.string().nullish(),
  prompt_cache_key: z.string().nullish(),
  prompt_cache_retention: z.string().nullish(),
  safety_identifier: z.string().nullish(),
});
export type ChatCompletionBody = z.infer<typeof chatCompletionBody>;
export const KNOWN_FIELDS = new Set(Object.keys(chatCompletionBody.shape));

export interface WireTopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}
export interface WireTokenLogprob extends WireTopLogprob {
  top_logprobs: WireTopLogprob[];
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number; audio_tokens: number };
  completion_tokens_details: { reasoning_tokens: number; audio_tokens: number; accepted_prediction_tokens: number; rejected_prediction_tokens: number };
}

export function usage(prompt: number, completion: number): Usage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

export const SYSTEM_FINGERPRINT = "fp_openft";

export type FinishReason = "stop" | "length";

/** What every response and chunk of one completion repeats. */
export interface CompletionHead {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export interface CompletedChoice {
  readonly text: string;
  readonly finish: FinishReason;
  /** null: the request had no logprobs. */
  readonly logprobs: WireTokenLogprob[] | null;
}

/** The whole completion: the JSON response (`object: "chat.completion"`). */
export function chatCompletionObject(head: CompletionHead, choices: readonly CompletedChoice[], u: Usage) {
  return {
    id: head.id,
    object: "chat.completion" as const,
    created: head.created,
    model: head.model,
    choices: choices.map((c, index) => ({
      index,
      message: { role: "assistant" as const, content: c.text, refusal: null, annotations: [] },
      logprobs: c.logprobs === null ? null : { content: c.logprobs, refusal: null },
      finish_reason: c.finish,
    })),
    usage: u,
    service_tier: "default",
    system_fingerprint: SYSTEM_FINGERPRINT,
  };
}

/** The three kinds of choice update in a stream: the role first, then text, then the finish. */
export const chunkChoice = {
  first: (index: number) => ({ index, delta: { role: "assistant" as const, content: "", refusal: null }, logprobs: null, finish_reason: null }),
  text: (index: number, content: string, logprobs: WireTokenLogprob[] | null) => ({
    index,
    delta: { content },
    logprobs: logprobs === null ? null : { content: logprobs, refusal: null },
    finish_reason: null,
  }),
  finish: (index: number, finish: FinishReason) => ({ index, delta: {}, logprobs: null, finish_reason: finish }),
};

/** One stream chunk (`object: "chat.completion.chunk"`). With include_usage every chunk has
 *  `usage: null` but the last, which has `choices: []` and the usage; without it, no `usage` key. */
export function chatCompletionChunk(head: CompletionHead, includeUsage: boolean, choices: object[], u?: Usage) {
  return {
    id: head.id,
    object: "chat.completion.chunk",
    created: head.created,
    model: head.model,
    service_tier: "default",
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices,
    ...(includeUsage ? { usage: u ?? null } : {}),
  };
}
