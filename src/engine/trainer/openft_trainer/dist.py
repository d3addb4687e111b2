"""Training on several processes under torchrun (`torchrun --standalone --nproc-per-node N -m
openft_trainer SPEC.json`): torch.distributed with NCCL on CUDA and gloo on the CPU.

Data parallel with the result of one process: every rank loads the whole dataset (so each knows
every step's examples and their trained-token count), trains its share of the step's examples
(`assign`: greedy by tokens, deterministic), scales its summed loss by the step's *global*
trained-token count, and the LoRA gradients are summed over ranks (`reduce_gradients`: one
all-reduce of the flattened adapter gradients; the adapter is small, so overlapping the
communication with the backward, as DDP does, would save little). The loss, accuracy and the stop
flag of a step travel in one all-reduce (`sum`). So the gradient, the optimizer step and the
reported loss are those of one process over the whole batch (up to the order of float sums).
Rank 0 alone writes events, checkpoints and the adapter.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch

log = logging.getLogger("openft_trainer")


def assign(weights: list[int], world: int) -> list[list[int]]:
    """Indices of the items each rank trains: heaviest first to the least loaded rank (ties to
    the lower rank), each rank's list kept in the original order."""
    loads, shares = [0] * world, [[] for _ in range(world)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        loads[r] += weights[i]
        shares[r].append(i)
    return [sorted(s) for s in shares]


class Dist:
    """This process's place among the job's processes (one process: rank 0 of 1, no collectives)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device = torch.device("cpu")  # where collectives' tensors live (NCCL: the GPU)
        self.started = False

    @classmethod
    def from_env(cls) -> "Dist":
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a plain `python -m` run is one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Joins the process group: NCCL on CUDA (one GPU per local rank), gloo on the CPU."""
        if self.world == 1 or self.started:
            return
        import torch.distributed as tdist

        backend = "nccl" if device.type == "cuda" else "gloo"
        # a rank that died is noticed by the others' collectives failing (gloo) or by torchrun
        # stopping them; the timeout only bounds a hang that neither catches
        tdist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                 device_id=device if device.type == "cuda" else None)
        self.device, self.started = device, True
        log.info("rank %d of %d (%s)", self.rank, self.world, backend)

    def stop(self) -> None:
        if self.started:
            import torch.distributed as tdist

            tdist.destroy_process_group()
            self.started = False

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks (float64)."""
        if self.world == 1:
            return list(values)
        import torch.distributed as tdist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        tdist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sums the gradients of params over all ranks (a missing gradient counts as zeros)."""
        if self.world == 1:
            return
        import torch.distributed as tdist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        tdist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
