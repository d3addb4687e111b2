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
