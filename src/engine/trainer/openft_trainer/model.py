"""Loading the base model and tokenizer offline, and wrapping the model with LoRA or QLoRA.

Precision (spec "dtype", see resolve_dtype): "auto" keeps the frozen base weights in bf16 on CUDA
and on a CPU with native bf16 dot products (x86 avx512_bf16 or AMX, where bf16 matmuls run about
twice as fast as fp32); elsewhere, or with "float32", they are fp32 (the exact path). A bf16 base on
the CPU always runs its forward under bf16 autocast (load_base wraps it), so the LoRA matmuls run in
bf16 too, while the LoRA weights, their gradients and the optimizer state stay fp32 and the loss is
taken in fp32 from the logits (mixed-precision training as on a GPU, and as TRL's bf16 recipe).
The price, as on a GPU: a LoRA update that is still small next to the bf16 output it is added to is
partly rounded away in the bf16 forward, so early in training the losses the job reports (train and
validation, computed by that forward) read higher than the same adapter evaluates in fp32 (SmolLM2
after three steps: 0.97 vs 0.87), while the adapter itself is as good (held-out fp32 loss 0.8015 vs
0.7995 trained in fp32). Keeping the activations fp32 around bf16 matmuls avoids that but holds
twice the activation memory, and first-touching it made short jobs about 15% slower here.
QLoRA ("nf4") keeps the frozen linear weights in bitsandbytes 4-bit NF4 with double quantization
and bf16 compute on both devices (bitsandbytes >= 0.47 runs this on the CPU); peft's
prepare_model_for_kbit_training upcasts the remaining small weights to fp32. LoRA weights are fp32
everywhere (peft's autocast_adapter_dtype), so a saved adapter reloads bit-for-bit. On the CPU the
LoRA dropout is FastDropout.
"""

from __future__ import annotations

import logging
import os

import numpy as np
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


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """local_rank: this process's place on the node under torchrun (one GPU each)."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainerError("device_unavailable", "device 'cuda' was requested but no CUDA device is visible")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise TrainerError("device_unavailable", f"process {local_rank} has no GPU of its own "
                                                     f"({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86 avx512_bf16 or AMX tiles). Without it oneDNN
    emulates bf16 matmuls with conversions, no faster than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        try:
            if getattr(cpu, probe)():
                return True
        except Exception:  # an older torch without the probe
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The frozen base weights' dtype: "float32"/"fp32", "bfloat16"/"bf16", or "auto" (bf16 on CUDA
    and on a CPU with native bf16, fp32 otherwise)."""
    if requested in DTYPES:
        return DTYPES[requested]
    if requested != "auto":
        raise TrainerError("invalid_spec", f"'dtype' must be 'auto', 'float32' or 'bfloat16', got {requested!r}")
    if device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


class FastDropout(torch.nn.Dropout):
    """nn.Dropout for the LoRA inputs on the CPU, where torch's bernoulli_ (one Mersenne-Twister
    draw per element, through a slow path) plus the masking took about a tenth of a training step
    on SmolLM2. Here the mask comes from 16-bit uniforms: a PCG64 stream (numpy; 64 bits per draw,
    so four mask elements each), seeded per call from the torch RNG, so a seeded or resumed run
    replays the same masks. Keep probability 1 - p to within 2^-17 (p rounded to a multiple of
    2^-16); kept values are scaled by 1/(1-p) as nn.Dropout does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        n = x.numel()
        seed = int(torch.randint(0, 2**62, (1,)))
        raw = np.random.PCG64(seed).random_raw((n + 3) // 4)
        bits = torch.from_numpy(raw.view(np.int16)[:n]).view(x.shape)
        keep = bits >= -32768 + round(self.p * 65536)  # int16: uniform over [-32768, 32767]
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


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
              gradient_checkpointing: bool = False, dtype: torch.dtype | None = None):
    """dtype: the frozen weights' dtype (None: resolve_dtype("auto")); ignored for "nf4"."""
    from transformers import AutoModelForCausalLM

    if attn_implementation == "sdpa" and not uses_sliding_window(load_config(base_model_dir)):
        _register_attention()
        attn_implementation = PACKED_SDPA  # per-document causal sdpa on packed rows
    kwargs = {"local_files_only": True, "attn_implementation": attn_implementation, "device_map": {"": device}}
    if quantization == "nf4":
        kwargs.update(quantization_config=_quantization_config(), dtype=torch.bfloat16)
    else:
        dtype = dtype or resolve_dtype("auto", device)
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, **kwargs)
    except TrainerError:
        raise
    except Exception as e:
        raise TrainerError("model_load_failed", f"cannot load the model from {base_model_dir}: {e}") from e
    model.config.use_cache = False  # with a cache, transformers skips the packed block-diagonal mask and examples leak into each other
    if quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if dtype == torch.bfloat16:
            # every forward of this model (training, evaluation, peft, generate) under bf16 autocast,
            # on CUDA as on the CPU, so the fp32 LoRA matmuls run in bf16 too (tensor cores) and SDPA
            # gets bf16 inputs (its flash kernel); backward needs none; the loss is taken in fp32
            model.forward = torch.autocast(device.type, dtype=torch.bfloat16)(model.forward)
            model.openft_autocast_dtype = torch.bfloat16
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
            peft_model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
        except Exception as e:
            raise TrainerError("model_load_failed", f"cannot load the adapter in {adapter_dir}: {e}") from e
    else:
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model),
                            bias="none", task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
    _tune_lora_layers(peft_model, autocast=getattr(model, "openft_autocast_dtype", None) is not None)
    return peft_model


def _tune_lora_layers(peft_model, autocast: bool) -> None:
    """CPU: FastDropout instead of nn.Dropout on the LoRA inputs. Under bf16 autocast: no cast of
    the bf16 layer input to the fp32 LoRA weights' dtype (autocast runs the LoRA matmuls in bf16
    anyway, so that copy would be wasted)."""
    for module in peft_model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        if autocast:
            module.cast_input_dtype_enabled = False
        for name, d in list(dropouts.items()):
            weight = getattr(module.lora_A[name], "weight", None) if name in module.lora_A else None
            if type(d) is torch.nn.Dropout and d.p > 0 and weight is not None and weight.device.type == "cpu":
                dropouts[name] = FastDropout(d.p)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_adapter(model, directory: str, weights: dict | None = None) -> None:
    """adapter_config.json + adapter_model.safetensors, loadable by PeftModel.from_pretrained and
    vLLM; peft's generated README.md model card is not kept. weights: the adapter's full tensors
    by parameter name (a sharded model's, gathered), else the model's own."""
    model.save_pretrained(directory, safe_serialization=True, **({"state_dict": weights} if weights else {}))
    readme = os.path.join(directory, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
