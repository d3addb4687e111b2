// vLLM's OpenAI server on the wire: the /v1/completions request a GenerateRequest becomes (prompt
// as token ids, so the prompt is exactly what the in-process engine would run), its SSE chunks as
// GenerationEvents, and its errors as ServingErrors with none of its own text about where it runs.
import { ServingError } from "./errors.js";
import type { GenerateRequest } from "./index.js";
import type { TokenLogprob } from "./sampler.js";
import type { GeneratedToken } from "./scheduler.js";

interface WireLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[] | null;
}
export interface WireChunk {
  choices?: { index: number; text: string; logprobs: WireLogprobs | null; finish_reason: string | null }[];
  usage?: { completion_tokens: number } | null;
  error?: { message?: string };
}

/** One choice of `req` as a vLLM completion request (n=1 each: see VllmClient.run). */
export function completionBody(model: string, req: GenerateRequest, seed: number | undefined, stopTokenIds: readonly number[]) {
  const s = req.sampling;
  return {
    model,
    prompt: req.promptIds,
    max_tokens: req.maxTokens,
    temperature: s.temperature,
    top_p: s.topP,
    presence_penalty: s.presencePenalty,
    frequency_penalty: s.frequencyPenalty,
    ...(s.logitBias.size > 0 ? { logit_bias: Object.fromEntries(s.logitBias) } : {}),
    ...(req.stops.length > 0 ? { stop: req.stops } : {}),
    // Every end-of-turn id of the tokenizer ends the reply, as in-process (vLLM alone knows only
    // the config's eos).
    stop_token_ids: stopTokenIds,
    ...(seed === undefined ? {} : { seed }),
    // "token_id:N" instead of token text: logprobs need ids (bytes come from our tokenizer).
    ...(s.topLogprobs === null ? {} : { logprobs: s.topLogprobs, return_tokens_as_token_ids: true }),
    stream: true,
    stream_options: { include_usage: true },
  };
}

function tokenId(s: string): number {
  return Number(s.slice(s.lastIndexOf(":") + 1));
}

/** A chunk's logprobs, the alternatives cut to the k most likely (vLLM adds the sampled token). */
export function chunkLogprobs(lp: WireLogprobs | null, k: number | null): GeneratedToken[] {
  if (!lp || k === null) return [];
  return lp.tokens.map((t, i) => {
    const alts = Object.entries(lp.top_logprobs?.[i] ?? {}).map(([tok, logprob]): TokenLogprob => ({ id: tokenId(tok), logprob }));
    alts.sort((a, b) => b.logprob - a.logprob);
    return { id: tokenId(t), logprob: lp.token_logprobs[i] ?? 0, top: alts.slice(0, k) };
  });
}

/** The `data:` payloads of an SSE body, up to and without "[DONE]". */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<WireChunk> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const bytes of body) {
    buf += decoder.decode(bytes, { stream: true });
    let end: number;
    while ((end = buf.indexOf("\n\n")) !== -1) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data) as WireChunk;
      }
    }
  }
  // Not a ServingError: the caller treats it as a broken connection (a replica killed mid-response
  // may close cleanly).
  throw new Error("the response ended before [DONE]");
}

/** vLLM's error text without addresses, paths or ports (it may name its own host or files). */
export function scrub(message: string): string {
  return message
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, "[engine]")
    .replace(/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, "[engine]")
    .replace(/(?:\/[\w.-]+){2,}/g, "[path]")
    .slice(0, 500);
}

/** A non-200 answer of vLLM as a ServingError; 404 (unknown model) is the caller's to handle. */
export async function responseError(res: Response): Promise<ServingError> {
  const text = await res.text().catch(() => "");
  let message = text;
  try {
    const j = JSON.parse(text) as { message?: string; error?: { message?: string } };
    message = j.error?.message ?? j.message ?? text;
  } catch {
    // not JSON: its text as is
  }
  if (res.status === 400 || res.status === 422) {
    if (/maximum context length|max_model_len|context length/i.test(message)) return new ServingError("context_length", scrub(message));
    return new ServingError("bad_request", scrub(message));
  }
  return new ServingError("failed", `The serving engine answered ${res.status}; please retry.`);
}
