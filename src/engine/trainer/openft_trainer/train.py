"""The training loop: packed steps, per-epoch validation and checkpoints, exact resume, SIGTERM.

Optimizer: AdamW (betas 0.9/0.999, eps 1e-8, no weight decay; fused on CUDA) on the LoRA weights,
gradient norm clipped to 1.0, learning rate 2e-4 x learning_rate_multiplier. Schedule (per step s,
0-based, T steps, W = max(1, ceil(3% of T)) warm-up steps): factor = min((s+1)/W, (T-s)/(T-W), 1):
linear warm-up reaching the full rate at step W, then linear decay; no step runs at rate 0.
Loss: mean cross-entropy over the trained (assistant) tokens of all the step's examples; one step
is batch_size examples, packed into padding-free rows of at most max_batch_tokens tokens whose
gradients are accumulated (so the result does not depend on max_batch_tokens).
Data order: a fresh permutation per epoch from (seed, epoch). A checkpoint stores the adapter plus
training_state.pt (optimizer, scheduler, RNG states, step, epoch, position, order, token count),
so resuming replays exactly the steps an uninterrupted run would take.
Several processes (torchrun): dist.py (data parallel) and fsdp.py (sharding); each step's
examples are shared out over the ranks, and the stop flag is decided together after each step, so
every rank stops after the same step and rank 0 writes the one checkpoint. Checkpoints hold full
tensors, so a job resumes on any number of processes.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data, fsdp, model as model_lib
from .dist import Dist, assign
from .errors import TrainerError
from .flops import FlopMeter
from .protocol import Protocol, StopFlag
from .spec import Spec

log = logging.getLogger("openft_trainer")

STATE_FILE = "training_state.pt"
WARMUP_FRACTION = 0.03
MAX_GRAD_NORM = 1.0


def warmup_steps(total_steps: int) -> int:
    return max(1, math.ceil(WARMUP_FRACTION * total_steps))


def lr_factor(step: int, total_steps: int, warmup: int) -> float:
    return min((step + 1) / warmup, (total_steps - step) / max(1, total_steps - warmup), 1.0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def forward_stats(model, examples: list[data.Example], device) -> tuple[torch.Tensor | None, int, int]:
    """Summed token cross-entropy, trained-token count and correct-argmax count of one packed row.
    Only the trained positions go through lm_head (logits_to_keep), which saves most of the
    logits memory on large vocabularies."""
    batch = data.pack(examples, device)
    targets = batch["targets"][0]
    keep = (targets != data.IGNORE).nonzero().squeeze(-1)
    if keep.numel() == 0:
        return None, 0, 0
    # document boundaries for the per-document attention (model.packed_sdpa_forward); kept on the
    # CPU so reading them needs no device sync
    bounds = torch.tensor([0] + list(itertools.accumulate(e.n_tokens for e in examples)), dtype=torch.long)
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                logits_to_keep=keep, cu_seq_lens_q=bounds)
    logits = out.logits[0].float()  # the loss in fp32 whatever the compute dtype
    wanted = targets[keep]
    loss_sum = F.cross_entropy(logits, wanted, reduction="sum")
    correct = int((logits.detach().argmax(-1) == wanted).sum())
    return loss_sum, int(keep.numel()), correct


def idle_pass(model, example: data.Example, device, backward: bool) -> None:
    """A forward (and backward) that changes nothing: under FSDP every forward is a collective, so
    a rank with fewer micro-batches than another runs these instead."""
    ids = torch.tensor([example.input_ids[:1]], dtype=torch.long, device=device)
    out = model(input_ids=ids, position_ids=torch.zeros_like(ids), use_cache=False, logits_to_keep=1)
    if backward:
        (out.logits.float().sum() * 0).backward()


def rank_packs(examples: list[data.Example], max_tokens: int, dist: Dist) -> tuple[list[list[data.Example]], int]:
    """This rank's micro-batches of examples, and how many passes every rank makes (the most any
    rank needs)."""
    shares = assign([e.n_tokens for e in examples], dist.world)
    packs = [data.micro_batches([examples[i] for i in share], max_tokens) for share in shares]
    return packs[dist.rank], max(len(p) for p in packs)


@torch.no_grad()
def evaluate(model, examples: list[data.Example], max_tokens: int, device, dist: Dist | None = None,
             sharded: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy over examples' trained tokens (each rank evaluates its share)."""
    dist = dist or Dist()
    model.eval()
    loss, n, correct = 0.0, 0, 0
    mine, passes = rank_packs(examples, max_tokens, dist)
    for i in range(passes if sharded else len(mine)):
        s, k, c = forward_stats(model, mine[i], device) if i < len(mine) else (None, 0, 0)
        if s is not None:
            loss, n, correct = loss + float(s), n + k, correct + c
        elif sharded:
            idle_pass(model, examples[0], device, backward=False)
    loss, n, correct = dist.sum([loss, n, correct])
    model.train()
    return (loss / n, correct / n) if n else (float("nan"), float("nan"))


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Run:
    def __init__(self, spec: Spec, protocol: Protocol, stop: StopFlag, dist: Dist | None = None):
        self.spec, self.protocol, self.stop = spec, protocol, stop
        self.hp = spec.hyperparameters
        self.dist = dist or Dist()
        self.sharded = False

    def emit(self, type_: str, **fields) -> None:
        if self.dist.is_main:  # rank 0 alone reports
            self.protocol.emit(type_, **fields)

    def prepare(self) -> None:
        spec, hp = self.spec, self.hp
        seed_everything(spec.seed)
        self.device = model_lib.pick_device(spec.device, self.dist.local_rank)
        self.dist.start(self.device)
        tokenizer = model_lib.load_tokenizer(spec.base_model_dir)
        max_len = spec.max_seq_len or model_lib.context_length(model_lib.load_config(spec.base_model_dir))
        self.load_sets(tokenizer, max_len)
        self.steps_per_epoch = data.steps_per_epoch(len(self.train_set), hp.batch_size)
        self.total_steps = hp.n_epochs * self.steps_per_epoch
        self.run_meta = {"n_examples": len(self.train_set), "batch_size": hp.batch_size, "n_epochs": hp.n_epochs,
                         "seed": spec.seed, "total_steps": self.total_steps}
        state = self._read_state() if spec.resume_from else None

        self.dtype = model_lib.resolve_dtype(spec.dtype, self.device)
        log.info("frozen base weights in %s on %s", self.dtype, self.device)
        self.sharded = fsdp.resolve(spec.sharding, self.dist.world, self.device, hp.quantization,
                                    spec.base_model_dir, self.dtype)
        base = model_lib.load_base(spec.base_model_dir, self.device, hp.quantization, spec.attn_implementation,
                                   spec.gradient_checkpointing, self.dtype)
        torch.manual_seed(spec.seed)  # the new adapter's initialisation depends only on the seed (every rank's alike)
        self.model = model_lib.add_lora(base, hp.lora_rank, hp.lora_alpha, hp.lora_dropout,
                                        spec.resume_from or spec.init_adapter)
        self.model.train()
        self.flops = FlopMeter(self.model, self.device)
        if self.sharded:
            compute = self.dtype if self.device.type == "cuda" and hp.quantization == "none" else None
            self.model = fsdp.shard(self.model, self.device, self.dist.world, compute)
        params = model_lib.trainable_parameters(self.model)
        # fused AdamW on CUDA; on sharded CPU weights the multi-tensor one (torch's single-tensor
        # AdamW mixes a plain-tensor step size into the DTensor update and fails)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                           fused=fused, foreach=True if self.sharded and not fused else None)
        warmup = warmup_steps(self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total_steps, warmup))
        self.step, self.tokens = 0, 0
        seed_everything(spec.seed)  # dropout RNG starts from the seed, whatever loading consumed
        if state is not None:
            self._restore(state)
        if self.dist.rank:  # other ranks' dropout masks differ from rank 0's
            torch.manual_seed(spec.seed * 1_000_003 + self.step * 101 + self.dist.rank)

    def load_sets(self, tokenizer, max_len: int | None) -> None:
        """Hook (dpo.DpoRun loads preference pairs): self.train_set and self.valid_set."""
        spec = self.spec
        self.train_set = data.load_examples(spec.train_file, tokenizer, max_len)
        if not any(e.n_trained for e in self.train_set):
            raise TrainerError("invalid_data", f"{spec.train_file} has no trainable assistant tokens")
        self.valid_set = data.load_examples(spec.validation_file, tokenizer, max_len) if spec.validation_file else []

    def example_lengths(self, batch: list) -> list[int]:
        """Hook: the token count of each sequence a step's items go through the model as."""
        return [e.n_tokens for e in batch]

    def extra_state(self) -> dict:
        """Hook: more of the run's state for training_state.pt (read back in _restore)."""
        return {}

    def validate(self) -> dict:
        """Hook: the end-of-epoch validation metrics, in OpenAI's names."""
        v_loss, v_acc = evaluate(self.model, self.valid_set, self.spec.max_batch_tokens, self.device,
                                 self.dist, self.sharded)
        return {"valid_loss": v_loss, "valid_mean_token_accuracy": v_acc}

    def _read_state(self) -> dict:
        path = os.path.join(self.spec.resume_from, STATE_FILE)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise TrainerError("resume_failed", f"cannot read {path}: {e}") from e
        if state.get("run") != self.run_meta:
            raise TrainerError("resume_failed", f"{path} belongs to a different job setup: "
                                                f"{state.get('run')} != {self.run_meta}")
        return state

    def _restore(self, state: dict) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.sharded:
                fsdp.shard_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
        except Exception as e:
            raise TrainerError("resume_failed", f"cannot restore the optimizer state: {e}") from e
        self.step, self.tokens = state["step"], state["tokens"]
        restore_rng(state["rng"])
        log.info("resumed at step %d of %d", self.step, self.total_steps)

    def save_adapter(self, directory: str) -> None:
        """Every rank calls this (under FSDP gathering the adapter is a collective); rank 0 writes."""
        weights = fsdp.full_adapter_state(self.model) if self.sharded else None
        if self.dist.is_main:
            shutil.rmtree(directory, ignore_errors=True)
            model_lib.save_adapter(self.model, directory, weights)

    def save_checkpoint(self, metrics: dict) -> None:
        step = self.step
        final_dir = os.path.join(os.path.abspath(self.spec.output_dir), f"checkpoint-{step}")
        tmp = final_dir + ".tmp"
        self.save_adapter(tmp)
        optimizer = fsdp.full_optimizer_state(self.optimizer) if self.sharded else self.optimizer.state_dict()
        if not self.dist.is_main:
            return
        epoch, position = divmod(step, self.steps_per_epoch)
        torch.save({"format": 1, "run": self.run_meta, "step": step, "epoch": epoch, "position": position,
                    "order": data.epoch_order(len(self.train_set), self.spec.seed, epoch), "tokens": self.tokens,
                    "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                    "rng": rng_state(), **self.extra_state()}, os.path.join(tmp, STATE_FILE))
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp, final_dir)
        self.emit("checkpoint", step=step, epoch=self.epoch_of(step), dir=final_dir,
                  files=sorted(os.listdir(final_dir)), metrics=metrics)

    def epoch_of(self, step: int) -> int:
        """1-based epoch that step (1-based) belongs to."""
        return max(1, math.ceil(step / self.steps_per_epoch))

    def train_step(self, examples: list[data.Example]) -> dict:
        """One optimizer step over examples (this rank trains its share); the step's metrics in
        OpenAI's names."""
        n_trained = sum(e.n_trained for e in examples)  # over every rank's share
        # the loss is a mean over the whole step's trained tokens; fully_shard averages gradients
        # over ranks where the sum is wanted, hence the world size
        scale = (self.dist.world if self.sharded else 1) / max(1, n_trained)
        loss_sum, correct = 0.0, 0
        mine, passes = rank_packs(examples, self.spec.max_batch_tokens, self.dist)
        for i in range(passes if self.sharded else len(mine)):
            s, _, c = forward_stats(self.model, mine[i], self.device) if i < len(mine) else (None, 0, 0)
            if s is not None:
                (s * scale).backward()
                loss_sum, correct = loss_sum + float(s.detach()), correct + c
            elif self.sharded:
                idle_pass(self.model, examples[0], self.device, backward=True)
        params = model_lib.trainable_parameters(self.model)
        if not self.sharded:
            self.dist.reduce_gradients(params)
        loss_sum, correct = self.dist.sum([loss_sum, correct])
        if n_trained:
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not n_trained:
            log.warning("step %d has no trained tokens", self.step + 1)
            return {"train_loss": 0.0, "train_mean_token_accuracy": 0.0}
        loss = loss_sum / n_trained
        if not math.isfinite(loss):
            raise TrainerError("training_diverged", f"the training loss became {loss} at step {self.step + 1}; "
                                                    "try a lower learning_rate_multiplier")
        return {"train_loss": loss, "train_mean_token_accuracy": correct / n_trained}

    def run(self) -> int:
        try:
            self.prepare()
            return self._train()
        finally:
            self.dist.stop()

    def _train(self) -> int:
        emit, hp = self.emit, self.hp
        emit("started", total_steps=self.total_steps, n_examples=len(self.train_set), device=str(self.device),
             trainable_params=self.flops.n_lora, start_step=self.step, n_validation_examples=len(self.valid_set),
             learning_rate=hp.learning_rate, quantization=hp.quantization, processes=self.dist.world,
             sharding="fsdp" if self.sharded else "none")
        started, done_here, metrics = time.perf_counter(), 0, {}
        delay = float(os.environ.get("OPENFT_TRAINER_STEP_DELAY_S", "0"))  # test hook: a slow step
        while self.step < self.total_steps:
            # decided together, so that every rank stops after the same step
            if self.dist.any(self.stop.requested):
                return self._stopped(metrics)
            epoch, position = divmod(self.step, self.steps_per_epoch)
            order = data.epoch_order(len(self.train_set), self.spec.seed, epoch)
            batch = [self.train_set[i] for i in order[position * hp.batch_size:(position + 1) * hp.batch_size]]
            if delay:
                time.sleep(delay)
            t0 = time.perf_counter()
            stats = self.train_step(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            self.step += 1
            done_here += 1
            lengths = self.example_lengths(batch)
            self.tokens += sum(lengths)
            metrics = {"step": self.step, **stats}
            event = {"step": self.step, "total_steps": self.total_steps, "epoch": self.epoch_of(self.step), **stats}
            epoch_end = self.step % self.steps_per_epoch == 0
            if epoch_end and self.valid_set:
                valid = self.validate()
                event.update(valid)
                metrics.update(valid, **{f"full_{k}": v for k, v in valid.items()})
            # the whole step's model FLOPs over all the job's devices
            mfu = self.flops.mfu(self.flops.step_flops(lengths), seconds, self.dist.world)
            event.update(tokens=self.tokens, steps_per_second=done_here / (time.perf_counter() - started))
            if mfu is not None:
                event["mfu"] = mfu
            emit("metrics", **event)
            if epoch_end:
                self.save_checkpoint(metrics)
            if self.step < self.total_steps and self.dist.any(self.stop.requested):
                return self._stopped(metrics, saved=epoch_end)
        final = os.path.join(os.path.abspath(self.spec.output_dir), "final")
        self.save_adapter(final)
        if self.dist.is_main:
            emit("done", adapter_dir=final, files=sorted(os.listdir(final)), trained_tokens=self.tokens)
        return 0

    def _stopped(self, metrics: dict, saved: bool = False) -> int:
        if not saved:
            self.save_checkpoint(metrics or {"step": self.step})
        self.emit("stopped", step=self.step)
        return 0
