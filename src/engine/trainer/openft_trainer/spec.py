"""The job spec the worker writes (a JSON file), parsed and checked.

Every field, its default and its help text are declared once, below, as dataclass fields with
metadata (as peft's LoraConfig does); `parse` checks a JSON object against them and `describe`
lists them (`python -m openft_trainer --describe-spec` prints that list). Example:

{"base_model_dir": "/models/qwen3-0.6b", "train_file": "/job/train.jsonl", "validation_file": null,
 "output_dir": "/job/out", "resume_from": null, "init_adapter": null, "method": "supervised",
 "seed": 42, "device": "auto", "integrations": [],
 "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0, "lora_rank": 16,
                     "lora_alpha": 32, "lora_dropout": 0.05, "quantization": "none"}}

Every hyperparameter is required and a number (quantization: "none" or "nf4"; beta only for DPO):
the API resolves "auto" when it queues the job, and the trainer has no defaults of its own, so a
trainer never trains another job than the one the API shows. "dtype" missing or null takes
$OPENFT_TRAIN_DTYPE, else "auto". The learning rate is BASE_LEARNING_RATE (2e-4, a usual LoRA
rate) times learning_rate_multiplier.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import TrainerError

BASE_LEARNING_RATE = 2e-4
DTYPES = ("auto", "float32", "bfloat16", "fp32", "bf16")
REQUIRED = dataclasses.MISSING


def knob(default: Any, help: str, kind: str, low: float | None = None, high: float | None = None,
         choices: tuple = ()) -> Any:
    """A spec field: kind is path|int|float|bool|str|choice|object|integrations; a missing (or
    null) value takes the default, REQUIRED fields must be given."""
    meta = {"help": help, "kind": kind, "low": low, "high": high, "choices": choices}
    return field(metadata=meta) if default is REQUIRED else field(default=default, metadata=meta)


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int = knob(REQUIRED, "passes over the training file", "int", 1)
    batch_size: int = knob(REQUIRED, "examples (DPO: pairs) per optimizer step, over all processes", "int", 1)
    learning_rate_multiplier: float = knob(REQUIRED, "learning rate = 2e-4 x this", "float", 0)
    lora_rank: int = knob(REQUIRED, "LoRA rank r", "int", 1)
    lora_alpha: float = knob(REQUIRED, "LoRA alpha (scale alpha/r)", "float", 0)
    lora_dropout: float = knob(REQUIRED, "dropout on the LoRA inputs", "float", 0, 1)
    quantization: str = knob(REQUIRED, "frozen base weights: none, or nf4 (QLoRA, bitsandbytes 4-bit)", "choice",
                             choices=("none", "nf4"))
    beta: float | None = knob(None, "DPO only (required there): the KL strength, 0 < beta <= 2", "float", 0, 2)
    rpo_alpha: float = knob(0.0, "DPO only: weight of the preferred output's mean token NLL added to the loss "
                                 "(RPO; 0 = pure DPO)", "float", 0, 10)

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier


@dataclass(frozen=True)
class Spec:
    base_model_dir: str = knob(REQUIRED, "Hugging Face folder: config, weights, tokenizer, chat template", "path")
    train_file: str = knob(REQUIRED, "OpenAI chat JSONL (DPO: preference pairs, see dpo.py)", "path")
    output_dir: str = knob(REQUIRED, "checkpoint-<step>/ and final/ are written here", "path")
    hyperparameters: Hyperparameters = knob(REQUIRED, "see Hyperparameters", "object")
    validation_file: str | None = knob(None, "the same format, evaluated at each epoch end", "path")
    resume_from: str | None = knob(None, "a checkpoint-<step> folder of an earlier run of this job", "path")
    init_adapter: str | None = knob(None, "a PEFT adapter folder to keep training (an ft: model)", "path")
    method: str = knob("supervised", "supervised, or dpo (train_file holds preference pairs)", "choice",
                       choices=("supervised", "dpo"))
    integrations: tuple = knob((), "[{type: wandb, wandb: {project, name?, entity?, tags?, run_id?}}]: "
                                    "metrics forwarded by wandb_log.py", "integrations")
    seed: int = knob(0, "seeds the adapter's initialisation, the data order and dropout", "int", 0)
    device: str = knob("auto", "auto (CUDA when visible), cpu or cuda", "choice", choices=("auto", "cpu", "cuda"))
    max_seq_len: int | None = knob(None, "longest example in tokens; default: the model's context length", "int", 2)
    max_batch_tokens: int = knob(16384, "tokens per packed forward (gradients are accumulated, so results "
                                        "do not depend on it)", "int", 2)
    gradient_checkpointing: bool = knob(False, "recompute activations in the backward", "bool")
    attn_implementation: str = knob("sdpa", "transformers attention; sdpa runs per document of a packed row", "str")
    dtype: str = knob("auto", "frozen base weights: auto (bf16 on CUDA and on a CPU with native bf16 matmuls, "
                              "else fp32), float32, bfloat16; null: $OPENFT_TRAIN_DTYPE", "choice", choices=DTYPES)
    sharding: str = knob("auto", "with several processes: none (data parallel), fsdp (the base sharded over "
                                 "them), auto (fsdp.py's rule)", "choice", choices=("auto", "none", "fsdp"))


def _bad(message: str) -> TrainerError:
    return TrainerError("invalid_spec", message)


def _check(name: str, value: Any, meta: dict) -> Any:
    kind, low, high = meta["kind"], meta["low"], meta["high"]
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise _bad(f"{name} must be a non-empty path string")
        return value
    if kind == "bool" and not isinstance(value, bool):
        raise _bad(f"{name} must be a boolean, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    if kind == "choice" and value not in meta["choices"]:
        raise _bad(f"{name} must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
    if kind == "integrations":
        if not isinstance(value, list) or not all(
                isinstance(i, dict) and i.get("type") == "wandb" and isinstance(i.get("wandb"), dict)
                and isinstance(i["wandb"].get("project"), str) for i in value):
            raise _bad(f"{name} must be a list of {{type: 'wandb', wandb: {{project, ...}}}}")
        return tuple(value)
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and value != int(value)):
            raise _bad(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _bad(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {value}")
        return int(value) if kind == "int" else float(value)
    return value


def _fields(cls, raw: dict, prefix: str = "", skip: tuple = ()) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        value = raw.get(f.name)
        if value is None:
            if f.default is REQUIRED:
                raise _bad(f"{prefix}{f.name} must be given ({f.metadata['help']})")
            continue
        out[f.name] = _check(prefix + f.name, value, f.metadata)
    return out


def parse(raw: object) -> Spec:
    if not isinstance(raw, dict):
        raise _bad("the spec must be a JSON object")
    hp = raw.get("hyperparameters")
    if not isinstance(hp, dict):
        raise _bad("hyperparameters must be an object")
    if raw.get("dtype") is None and os.environ.get("OPENFT_TRAIN_DTYPE"):
        raw = dict(raw, dtype=os.environ["OPENFT_TRAIN_DTYPE"])
    values = _fields(Spec, raw, skip=("hyperparameters",))
    hyper = _fields(Hyperparameters, hp, "hyperparameters.")
    if values.get("method") == "dpo":
        if hyper.get("beta") is None:
            raise _bad("hyperparameters.beta must be given for DPO")
        if hyper["beta"] == 0:
            raise _bad("hyperparameters.beta must be > 0")
    else:
        hyper.pop("beta", None)
        hyper.pop("rpo_alpha", None)
    return Spec(**values, hyperparameters=Hyperparameters(**hyper))


def describe() -> list[tuple[str, str, Any, str]]:
    """(name, kind, default, help) of every field, hyperparameters prefixed."""
    rows = []
    for cls, prefix in ((Spec, ""), (Hyperparameters, "hyperparameters.")):
        for f in dataclasses.fields(cls):
            if f.name != "hyperparameters":
                default = "required" if f.default is REQUIRED else f.default
                rows.append((prefix + f.name, f.metadata["kind"], default, f.metadata["help"]))
    return rows


def load(path: str) -> Spec:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise _bad(f"cannot read the spec {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise _bad(f"the spec {path} is not valid JSON: {e.msg}") from e
    return parse(raw)
