"""DPO (Rafailov et al. 2023, "Direct Preference Optimization") on the LoRA adapter.

Data: one preference pair a line, OpenAI's format: {"input": {"messages", "tools"?},
"preferred_output": [assistant message], "non_preferred_output": [assistant message]} (older names
preferred_completion / non_preferred_completion accepted). Each output is encoded as the chat
example input.messages + [output] with data.encode_example, the input's own assistant turns given
weight 0, so exactly the output's tokens (its content and the template's end-of-turn text) are
scored: the same tokens supervised training would train on, and the ones the API counted.

Loss, per pair, with pi the policy (the model with its adapter) and ref the reference:
  chosen_reward = beta * (log pi(preferred) - log ref(preferred))   (sums over the output tokens)
  rejected_reward = beta * (log pi(non_preferred) - log ref(non_preferred))
  loss = -log sigmoid(chosen_reward - rejected_reward)
averaged over the step's pairs: TRL's DPOTrainer with loss_type "sigmoid" (test_dpo.py holds the two
together). rpo_alpha > 0 (our extension, default 0) adds rpo_alpha x the preferred output's mean
token NLL to each pair's loss (RPO, TRL's rpo_alpha): pure DPO mostly pushes the non-preferred
output down, which moves rewards but seldom what greedy decoding says; the NLL term pulls the
preferred output up. Metrics: train_loss, train_reward_accuracy (share of pairs with chosen_reward >
rejected_reward) and train_reward_margin (mean chosen_reward - rejected_reward); valid_* alike.

Reference: the model as it starts, never a second copy of the weights. Its log-probabilities are
computed once, before the first step, in eval mode (no dropout): with the adapter disabled (the
frozen base) for a new adapter, or with the untouched parent adapter when the job continues an ft:
model (SFT, then DPO on its result: the reference is then the SFT model). They are 2 floats a pair,
kept in training_state.pt, so a resumed job keeps the reference of its first attempt even though the
adapter has moved since.

Batches: a step's pairs are packed, padding-free, both outputs of a pair in the same micro-batch
(each output a document of its own in the row, as data.pack does for examples).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import data, model as model_lib
from .errors import TrainerError
from .train import MAX_GRAD_NORM, Run, idle_pass, rank_packs

log = logging.getLogger("openft_trainer")

OUTPUT_KEYS = (("preferred_output", "preferred_completion"), ("non_preferred_output", "non_preferred_completion"))


@dataclass
class Pair:
    index: int  # position in its file, the row of the reference log-probabilities
    chosen: data.Example
    rejected: data.Example

    @property
    def n_tokens(self) -> int:  # what data.micro_batches packs by
        return self.chosen.n_tokens + self.rejected.n_tokens


def conversations(row: dict) -> list[dict]:
    """The chat examples of one pair: the input turns (earlier assistant turns not trained) followed
    by the preferred, then by the non-preferred output."""
    source = row.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        raise ValueError("field 'input' must be an object with a 'messages' array")
    turns = [dict(m, weight=0) if isinstance(m, dict) and m.get("role") == "assistant" else m
             for m in source["messages"]]
    out = []
    for name, alias in OUTPUT_KEYS:
        output = row.get(name, row.get(alias))
        if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
            raise ValueError(f"field '{name}' must be an array of one assistant message")
        out.append({"messages": turns + [dict(output[0], weight=1)], "tools": source.get("tools")})
    return out


def load_pairs(path: str, tokenizer, max_len: int | None) -> list[Pair]:
    specials = data._special_strings(tokenizer)
    pairs = []
    for n, row in enumerate(data.read_jsonl(path), 1):
        try:
            chosen, rejected = (data.encode_example(tokenizer, c, max_len, specials) for c in conversations(row))
        except Exception as e:  # template errors, bad shapes
            raise TrainerError("invalid_data", f"{path}: example {n}: {e}") from e
        if not chosen.n_trained or not rejected.n_trained:
            raise TrainerError("invalid_data", f"{path}: example {n}: an output has no tokens left to score "
                                               "(cut off by max_seq_len?)")
        pairs.append(Pair(n - 1, chosen, rejected))
    return pairs


def _documents(pairs: list[Pair]) -> list[data.Example]:
    return [e for p in pairs for e in (p.chosen, p.rejected)]


def sequence_logps(model, examples: list[data.Example], device) -> torch.Tensor:
    """Summed log-probability of each example's trained tokens, from one packed forward. Only the
    trained positions go through lm_head (logits_to_keep), as in train.forward_stats."""
    batch = data.pack(examples, device)
    targets = batch["targets"][0]
    keep = (targets != data.IGNORE).nonzero().squeeze(-1)
    bounds = torch.tensor([0] + list(itertools.accumulate(e.n_tokens for e in examples)), dtype=torch.long)
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                logits_to_keep=keep, cu_seq_lens_q=bounds)
    token_logps = -F.cross_entropy(out.logits[0].float(), targets[keep], reduction="none")
    owner = torch.repeat_interleave(torch.arange(len(examples), device=token_logps.device),
                                    torch.tensor([e.n_trained for e in examples], device=token_logps.device))
    return torch.zeros(len(examples), device=token_logps.device, dtype=token_logps.dtype).index_add(0, owner, token_logps)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float, rpo_alpha: float = 0.0,
             chosen_tokens: torch.Tensor | None = None):
    """policy, reference: [n, 2] log-probabilities (column 0 preferred, 1 non-preferred).
    Returns the per-pair losses and the detached chosen and rejected rewards. With rpo_alpha > 0
    each pair's loss also has rpo_alpha x the preferred output's mean token NLL (chosen_tokens: its
    trained-token counts): RPO (Pang et al. 2024), TRL's rpo_alpha, normalised per pair."""
    rewards = beta * (policy - reference)
    losses = -F.logsigmoid(rewards[:, 0] - rewards[:, 1])
    if rpo_alpha:
        losses = losses + rpo_alpha * (-policy[:, 0] / chosen_tokens.to(policy.dtype))
    rewards = rewards.detach()
    return losses, rewards[:, 0], rewards[:, 1]


@torch.no_grad()
def reference_logps(model, pairs: list[Pair], max_tokens: int, device, with_adapter: bool) -> torch.Tensor:
    """[len(pairs), 2] log-probabilities under the reference, on the CPU."""
    if not pairs:
        return torch.zeros(0, 2)
    was_training = model.training
    model.eval()
    out = []
    with contextlib.nullcontext() if with_adapter else model.disable_adapter():
        for pack in data.micro_batches(pairs, max_tokens):
            out.append(sequence_logps(model, _documents(pack), device).view(-1, 2).cpu())
    model.train(was_training)
    return torch.cat(out)


class DpoRun(Run):
    """Run with preference pairs and the DPO loss; the loop, checkpoints, resume and SIGTERM are
    Run's own."""

    reference: dict[str, torch.Tensor] | None = None

    def load_sets(self, tokenizer, max_len: int | None) -> None:
        spec = self.spec
        self.train_set = load_pairs(spec.train_file, tokenizer, max_len)
        self.valid_set = load_pairs(spec.validation_file, tokenizer, max_len) if spec.validation_file else []

    def example_lengths(self, batch: list[Pair]) -> list[int]:
        return [e.n_tokens for e in _documents(batch)]

    def prepare(self) -> None:
        super().prepare()
        if self.reference is None:  # a fresh start: the model is still the reference
            with_adapter = self.spec.init_adapter is not None
            ref = lambda pairs: reference_logps(self.model, pairs, self.spec.max_batch_tokens,  # noqa: E731
                                                self.device, with_adapter)
            self.reference = {"train": ref(self.train_set), "valid": ref(self.valid_set)}
            log.info("reference log-probabilities computed (%s)", "parent adapter" if with_adapter else "base model")

    def _restore(self, state: dict) -> None:
        ref = state.get("dpo_reference")
        if (not isinstance(ref, dict) or tuple(ref["train"].shape) != (len(self.train_set), 2)
                or tuple(ref["valid"].shape) != (len(self.valid_set), 2)):
            raise TrainerError("resume_failed", "the checkpoint holds no DPO reference for these files")
        super()._restore(state)
        self.reference = ref

    def extra_state(self) -> dict:
        return {"dpo_reference": self.reference}

    def _pack_stats(self, pack: list[Pair], which: str):
        policy = sequence_logps(self.model, _documents(pack), self.device).view(-1, 2)
        reference = self.reference[which][[p.index for p in pack]].to(policy.device)
        chosen_tokens = torch.tensor([p.chosen.n_trained for p in pack], device=policy.device)
        return dpo_loss(policy, reference, self.hp.beta, self.hp.rpo_alpha, chosen_tokens)

    def train_step(self, pairs: list[Pair]) -> dict:
        """One optimizer step; under torchrun each rank trains its share of the pairs (as
        Run.train_step does with examples) and the gradients and sums are reduced over ranks."""
        n = len(pairs)
        scale = (self.dist.world if self.sharded else 1) / n  # fully_shard averages over ranks
        loss, accuracy, margin = 0.0, 0.0, 0.0
        mine, passes = rank_packs(pairs, self.spec.max_batch_tokens, self.dist)
        for i in range(passes if self.sharded else len(mine)):
            if i >= len(mine):
                idle_pass(self.model, pairs[0].chosen, self.device, backward=True)
                continue
            losses, chosen, rejected = self._pack_stats(mine[i], "train")
            (losses.sum() * scale).backward()
            loss += float(losses.detach().sum())
            accuracy += float((chosen > rejected).sum())
            margin += float((chosen - rejected).sum())
        params = model_lib.trainable_parameters(self.model)
        if not self.sharded:
            self.dist.reduce_gradients(params)
        loss, accuracy, margin = self.dist.sum([loss, accuracy, margin])
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if not math.isfinite(loss):
            raise TrainerError("training_diverged", f"the DPO loss became {loss} at step {self.step + 1}; "
                                                    "try a lower learning_rate_multiplier or beta")
        return {"train_loss": loss / n, "train_reward_accuracy": accuracy / n, "train_reward_margin": margin / n}

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        loss, accuracy, margin = 0.0, 0.0, 0.0
        for pack in data.micro_batches(self.valid_set, self.spec.max_batch_tokens):
            losses, chosen, rejected = self._pack_stats(pack, "valid")
            loss += float(losses.sum())
            accuracy += float((chosen > rejected).sum())
            margin += float((chosen - rejected).sum())
        self.model.train()
        n = len(self.valid_set)
        return {"valid_loss": loss / n, "valid_reward_accuracy": accuracy / n, "valid_reward_margin": margin / n}
