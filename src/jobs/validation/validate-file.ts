// Validates a whole training or validation file before a job is queued, and resolves the "auto"
// hyperparameters from its size. Failures carry OpenAI's job `error` object: `code`
// (invalid_training_file, invalid_validation_file, invalid_n_examples), `param` and `message`.
import { checkChatExample, type ChatExample } from "./chat-format.js";
import { checkPreferenceExample, withOutput } from "./preference-format.js";

export type FileParam = "training_file" | "validation_file";
export type ValidationErrorCode = "invalid_training_file" | "invalid_validation_file" | "invalid_n_examples";

/** The part of ChatTokenizer the validator needs; a test may pass its own counter. */
export interface ExampleTokenCounter {
  readonly contextLength: number;
  countTokens(example: ChatExample): number;
}

export interface ValidateFileOptions {
  fileId: string;
  param: FileParam;
  tokenizer: ExampleTokenCounter;
  /** 10 for a training file (the live API's hard minimum), 1 for a validation file. */
  minExamples: number;
  /** "chat" (supervised; the default) or "preference" (DPO: input + preferred/non-preferred output). */
  format?: "chat" | "preference";
}

export type FileValidation =
  | { ok: true; nExamples: number; totalTokens: number; maxTokens: number }
  | { ok: false; error: { code: ValidationErrorCode; param: FileParam; message: string } };

function parseLine(line: string, exampleNumber: number): { value: unknown } | { problem: string } {
  try {
    return { value: JSON.parse(line) };
  } catch {
    return { problem: `Example ${exampleNumber}, Expected file to have JSONL format, where every line is a valid JSON dictionary` };
  }
}

/** "training_file" → "training", used in the live API's sentence shapes. */
function kindOf(param: FileParam): string {
  return param === "training_file" ? "training" : "validation";
}

/** The conversations a line trains on: one for chat, one per output for a preference pair. */
function conversations(value: unknown, exampleNumber: number, format: "chat" | "preference"): ChatExample[] | { problem: string } {
  if (format === "chat") {
    const checked = checkChatExample(value, exampleNumber);
    return checked.ok ? [checked.example] : { problem: checked.message };
  }
  const checked = checkPreferenceExample(value, exampleNumber);
  if (!checked.ok) return { problem: checked.message };
  const { input, preferred, nonPreferred } = checked.example;
  return [withOutput(input, preferred), withOutput(input, nonPreferred)];
}

/**
 * Checks one line: format, then length. Examples longer than the model's context are rejected,
 * not truncated as OpenAI documents doing: cutting the tail usually cuts the assistant answer
 * (the only trained part), leaving an example that teaches the model to stop mid-sentence.
 * Returns the token counts (of each conversation), or the problem in "Example N, ..." form.
 */
function checkExample(line: string, exampleNumber: number, opts: ValidateFileOptions): number[] | { problem: string; format: boolean } {
  const parsed = parseLine(line, exampleNumber);
  if ("problem" in parsed) return { problem: parsed.problem, format: true };
  const examples = conversations(parsed.value, exampleNumber, opts.format ?? "chat");
  if (!Array.isArray(examples)) return { problem: examples.problem, format: true };
  const { tokenizer } = opts;
  const counts: number[] = [];
  for (const example of examples) {
    try {
      counts.push(tokenizer.countTokens(example));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      return { problem: `Example ${exampleNumber}, The model's chat template cannot render this example: ${why}`, format: true };
    }
  }
  const tokens = Math.max(...counts);
  if (tokens > tokenizer.contextLength) {
    return {
      problem: `Example ${exampleNumber} is too long: it has ${tokens} tokens, but the model's context length is `
        + `${tokenizer.contextLength} tokens. Shorten or remove it; examples are not truncated.`,
      format: false,
    };
  }
  return counts;
}

function lineFailure(opts: ValidateFileOptions, lineNumber: number, problem: string, format: boolean): FileValidation {
  const kind = kindOf(opts.param);
  const prefix = `The job failed due to an invalid ${kind} file.${format ? " Invalid file format." : ""}`;
  return {
    ok: false,
    error: {
      code: opts.param === "training_file" ? "invalid_training_file" : "invalid_validation_file",
      param: opts.param,
      message: `${prefix} ${problem} (file ${opts.fileId}, line ${lineNumber})`,
    },
  };
}

/**
 * Reads the file line by line and stops at the first bad example, as the live API reports one.
 * Blank lines (a trailing newline, CRLF leftovers) are skipped and do not count as examples, so
 * "Example N" is the N-th example while the suffix names the physical line.
 */
export async function validateTrainingFile(
  lines: AsyncIterable<string> | Iterable<string>,
  opts: ValidateFileOptions,
): Promise<FileValidation> {
  let lineNumber = 0;
  let nExamples = 0;
  let totalTokens = 0;
  let maxTokens = 0;
  for await (const raw of lines) {
    lineNumber += 1;
    const line = lineNumber === 1 ? raw.replace(/^\uFEFF/, "") : raw;
    if (line.trim() === "") continue;
    nExamples += 1;
    const result = checkExample(line, nExamples, opts);
    if (!Array.isArray(result)) return lineFailure(opts, lineNumber, result.problem, result.format);
    for (const tokens of result) {
      totalTokens += tokens;
      maxTokens = Math.max(maxTokens, tokens);
    }
  }
  if (nExamples < opts.minExamples) {
    const kind = kindOf(opts.param);
    const message = `${kind[0]!.toUpperCase()}${kind.slice(1)} file has ${nExamples} example(s), but must have at least ${opts.minExamples} examples (file ${opts.fileId})`;
    return { ok: false, error: { code: "invalid_n_examples", param: opts.param, message } };
  }
  return { ok: true, nExamples, totalTokens, maxTokens };
}

export type HyperparameterRequest = "auto" | number;

export type Quantization = "none" | "nf4";

/** Keys mirror the wire `method.supervised.hyperparameters` object, which the job echoes back
 *  resolved once its files are validated, as OpenAI's jobs do. */
export interface RequestedHyperparameters {
  n_epochs?: HyperparameterRequest;
  batch_size?: HyperparameterRequest;
  learning_rate_multiplier?: HyperparameterRequest;
  lora_rank?: HyperparameterRequest;
  lora_alpha?: HyperparameterRequest;
  lora_dropout?: HyperparameterRequest;
  quantization?: Quantization;
}

/** What the trainer receives: numbers only (it has no defaults of its own). */
export interface ResolvedHyperparameters {
  n_epochs: number;
  batch_size: number;
  learning_rate_multiplier: number;
  lora_rank: number;
  lora_alpha: number;
  lora_dropout: number;
  quantization: Quantization;
}

/** Our LoRA extensions' defaults: rank 16 with alpha 2x rank (PEFT's usual scale) and light dropout. */
export const LORA_DEFAULTS = { lora_rank: 16, lora_alpha: 32, lora_dropout: 0.05, quantization: "none" } as const;

/** OpenAI's cookbook's default-epoch estimator: aim for 3 epochs, but see at least ~100 and at
 *  most ~25,000 examples in total. 10 examples → 10 epochs, as observed on the live API. */
export function autoEpochs(nExamples: number): number {
  if (nExamples * 3 < 100) return Math.min(25, Math.floor(100 / nExamples));
  if (nExamples * 3 > 25_000) return Math.max(1, Math.floor(25_000 / nExamples));
  return 3;
}

/** OpenAI does not publish its rule (it chose 1 for a 10-example job). Ours: 0.2% of the
 *  examples, clamped to the API's 1..256, rounded down to a power of two so that batches split
 *  evenly into micro-batches and gradient-accumulation steps. 10 → 1, 1,000 → 2, 3,000 → 4. */
export function autoBatchSize(nExamples: number): number {
  const target = Math.min(256, Math.max(1, Math.round(0.002 * nExamples)));
  return 2 ** Math.floor(Math.log2(target));
}

/** A multiplier of the trainer's base learning rate. OpenAI's rule is unpublished (1.8 observed
 *  for a 10-example job); 2 is in the range it is seen to pick and suits LoRA's small updates. */
export const AUTO_LEARNING_RATE_MULTIPLIER = 2;

/** DPO's beta for "auto": 0.1, OpenAI's documented default and the DPO paper's and TRL's. The
 *  right beta depends on how far the preferred style is from the model's, which the file alone
 *  does not tell, so no size-based rule is attempted. */
export const AUTO_DPO_BETA = 0.1;

/** DPO's multiplier for "auto": 0.5 (a 1e-4 learning rate on the trainer's 2e-4 base), as DPO's
 *  loss is steeper than SFT's once the margins grow. Not backed by bench:train-dpo: at 0.2, 0.5
 *  and 1.0, pure DPO moved the implicit rewards of every held-out pair but hardly the replies
 *  (bench/README.md); what moved them was rpo_alpha with the supervised rate. */
export const AUTO_DPO_LEARNING_RATE_MULTIPLIER = 0.5;

/** rpo_alpha for "auto": 0, pure DPO, OpenAI's objective (its train_loss starts at log 2 and means
 *  what theirs means). Our extension: rpo_alpha > 0 adds that many times the preferred output's
 *  mean token NLL (RPO, TRL's rpo_alpha). bench:train-dpo (SmolLM2, a one-sentence style, 48
 *  pairs): pure DPO 1/24 replies in the style, general answers 14 -> 11 of 24; rpo_alpha 1 with
 *  learning_rate_multiplier 2, 4 epochs and 32 everyday pairs in the style 23/24, preference
 *  accuracy 0% -> 100%, general answers 14 -> 15 (bench/README.md). It changes what train_loss
 *  means (no longer OpenAI's DPO loss, from log 2), so it is asked for, not the default. */
export const AUTO_DPO_RPO_ALPHA = 0;

export function resolveAutoHyperparameters(input: {
  nExamples: number;
  requested: RequestedHyperparameters;
}): ResolvedHyperparameters {
  const { nExamples, requested } = input;
  if (!Number.isInteger(nExamples) || nExamples < 1) throw new RangeError(`nExamples must be a positive integer, got ${nExamples}`);
  const pick = (value: HyperparameterRequest | undefined, auto: () => number): number =>
    value === undefined || value === "auto" ? auto() : value;
  return {
    n_epochs: pick(requested.n_epochs, () => autoEpochs(nExamples)),
    batch_size: pick(requested.batch_size, () => autoBatchSize(nExamples)),
    learning_rate_multiplier: pick(requested.learning_rate_multiplier, () => AUTO_LEARNING_RATE_MULTIPLIER),
    lora_rank: pick(requested.lora_rank, () => LORA_DEFAULTS.lora_rank),
    lora_alpha: pick(requested.lora_alpha, () => LORA_DEFAULTS.lora_alpha),
    lora_dropout: pick(requested.lora_dropout, () => LORA_DEFAULTS.lora_dropout),
    quantization: requested.quantization ?? LORA_DEFAULTS.quantization,
  };
}
