"""FSDP (PyTorch's fully_shard, "FSDP2") for a base model larger than one device: every decoder
layer and then the whole model are sharded over the job's processes, the frozen base weights and
the LoRA weights alike (per-parameter sharding, so frozen and trainable weights may share a
layer); a layer's weights are all-gathered for its forward and backward and freed after. Only the
LoRA weights have gradients; fully_shard reduce-scatters them averaged over ranks, so the loss a
rank back-propagates is multiplied by the world size to keep the sum over ranks
that data parallel computes.

Every forward is a collective here, so every rank runs the same number of forwards and backwards
per step (train.py pads a rank with fewer micro-batches with `dummy_forward`). Checkpoints hold
full (unsharded) tensors: the adapter as peft saves it, the optimizer state as one process has
it; so a checkpoint resumes with any number of processes, sharded or not.

Choice ("sharding" in the spec): "fsdp", "none", or "auto" = fsdp when the frozen weights take
more than AUTO_FRACTION of one CUDA device's memory (the rest is left for activations, the LoRA
state and the allocator), never on a CPU or for QLoRA (bitsandbytes' packed 4-bit weights are not
sharded here; a 4-bit base small enough for data parallel is the point of QLoRA).
"""

from __future__ import annotations

import logging
import math
import os

import torch

log = logging.getLogger("openft_trainer")

AUTO_FRACTION = 0.6


def weights_bytes(base_model_dir: str, dtype: torch.dtype) -> int:
    """The frozen weights' size once loaded in dtype, from the safetensors headers."""
    from safetensors import safe_open

    total = 0
    for name in os.listdir(base_model_dir):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(base_model_dir, name), "pt") as f:
                for key in f.keys():
                    total += math.prod(f.get_slice(key).get_shape())
    return total * torch.tensor([], dtype=dtype).element_size()


def resolve(sharding: str, world: int, device: torch.device, quantization: str, base_model_dir: str,
            dtype: torch.dtype) -> bool:
    """Whether to shard with FSDP."""
    if world == 1 or sharding == "none":
        return False
    if quantization == "nf4":
        if sharding == "fsdp":
            log.warning("FSDP does not shard a 4-bit (QLoRA) base here: data parallel instead")
        return False
    if sharding == "fsdp":
        return True
    if device.type != "cuda":
        return False
    need = weights_bytes(base_model_dir, dtype)
    have = torch.cuda.get_device_properties(device).total_memory
    log.info("frozen weights %.1f GB, one device %.1f GB", need / 1e9, have / 1e9)
    return need > AUTO_FRACTION * have


def shard(model, device: torch.device, world: int, compute_dtype: torch.dtype | None):
    """fully_shard on every decoder layer (the model's _no_split_modules) and on the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    # one dtype per all-gather: on CUDA the fp32 LoRA weights are gathered in the bf16 of the base
    # (their master copy, the gradients and the optimizer state stay fp32)
    mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if compute_dtype else None
    kwargs = {"mesh": mesh, **({"mp_policy": mp} if mp else {})}
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_classes = set(getattr(inner, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    log.info("FSDP: %d layers sharded over %d processes", len(layers), world)
    return model


def full_tensor(t):
    """A DTensor's whole value (a collective: every rank calls it in the same order); other
    tensors as they are."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_adapter_state(model) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) weights, unsharded, by their names in the peft model."""
    return {n: full_tensor(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}


def full_optimizer_state(optimizer) -> dict:
    """optimizer.state_dict() with full tensors (new dicts: state_dict() shares the live ones)."""
    state = optimizer.state_dict()
    full = {i: {k: full_tensor(v).cpu() if isinstance(v, torch.Tensor) else v for k, v in per_param.items()}
            for i, per_param in state["state"].items()}
    return {**state, "state": full}


def shard_optimizer_state(optimizer) -> None:
    """After load_state_dict of a full state: each moment tensor as a DTensor laid out like its
    parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor):
                continue
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and not isinstance(v, DTensor) and v.shape == p.shape:
                    optimizer.state[p][k] = distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
