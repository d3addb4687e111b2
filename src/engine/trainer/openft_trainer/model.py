"""Loading the base model and tokenizer offline, and wrapping the model with LoRA or QLoRA.

Precision: on CUDA the base weights are bf16; on the CPU fp32 (exact, and the tiny CI models are
cheap either way). QLoRA ("nf4") keeps the frozen linear weights in bitsandbytes 4-bit NF4 with
double quantization and bf16 compute on both devices (bitsandbytes >= 0.47 runs this on the CPU);
peft's prepare_model_for_kbit_training upcasts the remaining small weights to fp32. LoRA weights are
fp32 everywhere (peft's autocast_adapter_dtype), so a saved adapter reloads bit-for-bit.
"""

from __future__ import annotations

import logging
import os

import torch

from .errors import TrainerError

log = logging.getLogger("openft_trainer")

# Every linear projection of a Llama-style decoder layer (attention and MLP); never lm_head.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# Attention for packed, padding-free rows (the trainer's "sdpa", see packed_sdpa_forward).
PACKED_SDPA = "openft_packed_sdpa"


def doc_bounds(position_ids: torch.Tensor) -> list[int]:
    """[0, s1, s2, ..., T]: where the documents of one packed row start (position id 0) and end."""
    starts = (position_ids == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return starts + [int(position_ids.numel())]


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                        cu_seq_lens_q=None, position_ids=None, **kwargs):
    """Causal SDPA run per document of a packed row (batch 1, no cache, no mask), so each
    document attends only to itself and the causal kernel skips everything above the diagonal:
    sum(l^2/2) attention work instead of the T^2 of a dense block-diagonal mask over the whole row.
    The same numbers as sdpa with that mask (test_packed_loss_equals_separate_examples); anything
    else (a mask, a cache, several rows) goes to transformers' sdpa unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    single = query.shape[0] == 1 and query.shape[2] == key.shape[2] and attention_mask is None
    if not single or (cu_seq_lens_q is None and position_ids is None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else doc_bounds(position_ids[0])
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            outs.append(torch.nn.functional.scaled_dot_product_attention(
                query[:, :, lo:hi], key[:, :, lo:hi], value[:, :, lo:hi], dropout_p=dropout, scale=scaling,
                is_causal=hi - lo > 1, enable_gqa=gqa))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    # not registered as a mask function: transformers then builds no mask at all for it


def uses_sliding_window(config) -> bool:
    cfg = getattr(config, "text_config", None) or config
    types = getattr(cfg, "layer_types", None) or []
    return any(t != "full_attention" for t in types) or bool(getattr(cfg, "use_sliding_window", False))


def pick_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device_unavailable", "device 'cuda' was requested but no CUDA device is visible")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def load_tokenizer(base_model_dir: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(base_model_dir, local_files_only=True)
    except Exception as e:
        raise TrainerError("model_load_failed", f"cannot load the tokenizer from {base_model_dir}: {e}") from e
    if not tok.chat_template:
        raise TrainerError("model_load_failed", f"{base_model_dir} has no chat template")
    if not tok.is_fast:
        raise TrainerError("model_load_failed", f"{base_model_dir} needs a fast tokenizer (tokenizer.json)")
    return tok


def load_config(base_model_dir: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base_model_dir, local_files_only=True)
    except Exception as e:
        raise TrainerError("model_load_failed", f"cannot read the model config in {base_model_dir}: {e}") from e


def context_length(model_config) -> int | None:
    cfg = getattr(model_config, "text_config", None) or model_config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _quantization_config():
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except Exception as e:  # ImportError, or a broken native library
        raise TrainerError("quantization_unavailable", f"quantization 'nf4' needs bitsandbytes: {e}") from e
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_base(base_model_dir: str, device: torch.device, quantization: str, attn_implementation: str = "sdpa",
              gradient_checkpointing: bool = False):
    from transformers import AutoModelForCausalLM

    if attn_implementation == "sdpa" and not uses_sliding_window(load_config(base_model_dir)):
        _register_attention()
        attn_implementation = PACKED_SDPA  # per-document causal sdpa on packed rows
    kwargs = {"local_files_only": True, "attn_implementation": attn_implementation, "device_map": {"": device}}
    if quantization == "nf4":
        kwargs.update(quantization_config=_quantization_config(), dtype=torch.bfloat16)
    else:
        kwargs["dtype"] = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, **kwargs)
    except TrainerError:
        raise
    except Exception as e:
        raise TrainerError("model_load_failed", f"cannot load the model from {base_model_dir}: {e}") from e
    model.config.use_cache = False  # packed batches need it off (training-notes §4.1)
    if quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def lora_targets(model) -> list[str] | str:
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [t for t in LORA_TARGETS if t in present]
    return found or "all-linear"  # other layouts: peft's every-linear-but-the-output-layer


def add_lora(model, rank: int, alpha: float, dropout: float, adapter_dir: str | None = None):
    """A new adapter with the job's rank/alpha/dropout, or the adapter in adapter_dir (continuing an
    ft: model, or resuming a checkpoint), made trainable with the configuration it was saved with."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter_dir is not None:
        if not os.path.isfile(os.path.join(adapter_dir, "adapter_config.json")):
            raise TrainerError("model_load_failed", f"{adapter_dir} holds no adapter_config.json")
        try:
            return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
        except Exception as e:
            raise TrainerError("model_load_failed", f"cannot load the adapter in {adapter_dir}: {e}") from e
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_adapter(model, directory: str) -> None:
    """adapter_config.json + adapter_model.safetensors, loadable by PeftModel.from_pretrained and
    vLLM; peft's generated README.md model card is not kept."""
    model.save_pretrained(directory, safe_serialization=True)
    readme = os.path.join(directory, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
