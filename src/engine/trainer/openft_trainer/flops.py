"""Model FLOPs and MFU for LoRA training (the usual 6N rule, split for frozen and trainable weights).

Per trained token (one forward + backward):
    full fine-tuning : 6*N_mat            + 12*L*d_attn*T_ctx
    LoRA / QLoRA     : 4*N_mat + 6*N_lora + 12*L*d_attn*T_ctx
N_mat: weights used in matmuls (every projection and lm_head; not the embedding lookup), frozen
under LoRA so they cost a forward (2N) and an input-gradient (2N) matmul but no weight gradient.
N_lora: the adapter's trainable weights. L: layers; d_attn = n_heads * head_dim.
T_ctx: mean attended context per token. For a causal document of length l a kernel that skips
masked blocks attends l/2 on average, so a packed batch has T_ctx = sum(l^2/2) / sum(l); a dense
kernel (sdpa with a full mask) computes T_ctx = the row length for every token.
Gradient checkpointing adds one more forward to the hardware FLOPs (not to model FLOPs/MFU).
MFU = model FLOPs per second / the device's peak dense bf16 FLOP/s.
"""

from __future__ import annotations

import torch

# Peak dense bf16 FLOP/s by a substring of torch.cuda.get_device_name(); unknown devices: no MFU.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def matmul_params(model: torch.nn.Module) -> int:
    """N_mat: in*out of every Linear-like layer outside the LoRA adapters (works for bnb Linear4bit
    too, which keeps in_features/out_features while its weight is packed)."""
    total = 0
    for name, module in model.named_modules():
        if ".lora_" in name or name.startswith("lora_"):
            continue
        if isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features
    return total


def lora_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def attention_dims(config) -> tuple[int, int]:
    cfg = getattr(config, "text_config", None) or config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, heads * head_dim


def causal_context(doc_lens: list[int]) -> float:
    """T_ctx for packed causal documents with block-skipping attention: sum(l^2/2) / sum(l)."""
    total = sum(doc_lens)
    return sum(l * l / 2 for l in doc_lens) / total if total else 0.0


def flops_per_token(n_mat: int, n_lora: int, n_layers: int, d_attn: int, t_ctx: float,
                    full_finetune: bool = False) -> float:
    dense = 6 * n_mat if full_finetune else 4 * n_mat + 6 * n_lora
    return dense + 12 * n_layers * d_attn * t_ctx


class FlopMeter:
    """Model FLOPs of training steps on one model, from the documents' lengths."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.n_mat = matmul_params(model)
        self.n_lora = lora_params(model)
        self.n_layers, self.d_attn = attention_dims(model.config)
        self.peak = None
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            self.peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    def step_flops(self, doc_lens: list[int]) -> float:
        tokens = sum(doc_lens)
        return tokens * flops_per_token(self.n_mat, self.n_lora, self.n_layers, self.d_attn, causal_context(doc_lens))

    def mfu(self, flops: float, seconds: float, devices: int = 1) -> float | None:
        """flops done in seconds on `devices` devices of this kind, as a fraction of their peak."""
        return flops / seconds / (self.peak * devices) if self.peak and seconds > 0 else None
