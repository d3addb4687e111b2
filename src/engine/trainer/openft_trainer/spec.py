"""The job spec the worker writes (a JSON file), parsed and checked.

{
  "base_model_dir": "/models/qwen3-0.6b",        # Hugging Face folder: config, weights, tokenizer, template
  "train_file": "/job/train.jsonl",              # OpenAI chat JSONL
  "validation_file": "/job/valid.jsonl" | null,
  "output_dir": "/job/out",                      # checkpoint-<step>/ and final/ are written here
  "resume_from": "/job/ckpt" | null,             # a checkpoint-<step> folder of an earlier run of this job
  "init_adapter": "/models/ft-parent" | null,    # a PEFT adapter to keep training (an ft: model)
  "method": "supervised" | "dpo",               # optional, default supervised; dpo: train_file holds
                                                 # preference pairs (see dpo.py)
  "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0,
                      "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "quantization": "none"|"nf4",
                      "beta": 0.1},              # beta: DPO only, 0 < beta <= 2
  "integrations": [{"type": "wandb", "wandb": {"project", "name"?, "entity"?, "tags"?, "run_id"?}}],
                                                 # optional; metrics forwarded by wandb_log.py
  "seed": 42,
  "device": "auto"|"cpu"|"cuda",
  "max_seq_len": 4096,                           # optional; default: the model's context length
  # optional tuning knobs:
  "max_batch_tokens": 16384,                     # tokens per packed forward (micro-batch); default 16384
  "gradient_checkpointing": false,
  "attn_implementation": "sdpa",
  "dtype": "auto"                                # frozen base weights: "auto"|"float32"|"bfloat16"
}
Every hyperparameter is required and a number (quantization: "none" or "nf4"): the API resolves
"auto" when it queues the job, and the trainer has no defaults of its own. "dtype" missing or null takes
$OPENFT_TRAIN_DTYPE, else "auto": bf16 on CUDA and on a CPU with native bf16 matmuls (avx512_bf16
or AMX), fp32 elsewhere ("float32" is the exact path; "fp32"/"bf16" are accepted as aliases). The learning rate is
BASE_LEARNING_RATE (2e-4, a usual LoRA rate) times learning_rate_multiplier.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import TrainerError

BASE_LEARNING_RATE = 2e-4
DTYPES = ("auto", "float32", "bfloat16", "fp32", "bf16")


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    quantization: str
    beta: float | None = None  # DPO only

    @property
    def learning_rate(self) -> float:
        return BASE_LEARNING_RATE * self.learning_rate_multiplier


@dataclass(frozen=True)
class Spec:
    base_model_dir: str
    train_file: str
    validation_file: str | None
    output_dir: str
    resume_from: str | None
    init_adapter: str | None
    hyperparameters: Hyperparameters
    seed: int
    device: str
    max_seq_len: int | None
    max_batch_tokens: int
    gradient_checkpointing: bool
    attn_implementation: str
    dtype: str = "auto"
    method: str = "supervised"
    integrations: tuple = ()


def _bad(message: str) -> TrainerError:
    return TrainerError("invalid_spec", message)


def _path(raw: dict, key: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(f"'{key}' must be a non-empty path string" + ("" if required else " or null"))
    return value


def _number(hp: dict, key: str, kind: type, low: float, high: float | None = None):
    value = hp.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise _bad(f"hyperparameters.{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise _bad(f"hyperparameters.{key} must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return kind(value)


def parse(raw: object) -> Spec:
    if not isinstance(raw, dict):
        raise _bad("the spec must be a JSON object")
    hp = raw.get("hyperparameters") or {}
    if not isinstance(hp, dict):
        raise _bad("'hyperparameters' must be an object")
    quantization = hp.get("quantization")
    if quantization not in ("none", "nf4"):
        raise _bad(f"hyperparameters.quantization must be 'none' or 'nf4', got {quantization!r}")
    hyper = Hyperparameters(
        n_epochs=_number(hp, "n_epochs", int, 1), batch_size=_number(hp, "batch_size", int, 1),
        learning_rate_multiplier=_number(hp, "learning_rate_multiplier", float, 0),
        lora_rank=_number(hp, "lora_rank", int, 1), lora_alpha=_number(hp, "lora_alpha", float, 0),
        lora_dropout=_number(hp, "lora_dropout", float, 0, 1), quantization=quantization,
        beta=_number(hp, "beta", float, 0, 2) if raw.get("method") == "dpo" else None)
    if hyper.beta == 0:
        raise _bad("hyperparameters.beta must be > 0")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _bad(f"'seed' must be a non-negative integer, got {seed!r}")
    device = raw.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise _bad(f"'device' must be 'auto', 'cpu' or 'cuda', got {device!r}")
    optional_ints = {}
    for key, default in (("max_seq_len", None), ("max_batch_tokens", 16384)):
        value = raw.get(key)
        if value is None:
            value = default
        elif isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise _bad(f"'{key}' must be an integer >= 2, got {value!r}")
        optional_ints[key] = value
    checkpointing = raw.get("gradient_checkpointing", False)
    if not isinstance(checkpointing, bool):
        raise _bad(f"'gradient_checkpointing' must be a boolean, got {checkpointing!r}")
    attn = raw.get("attn_implementation") or "sdpa"
    if not isinstance(attn, str):
        raise _bad("'attn_implementation' must be a string")
    dtype = raw.get("dtype")
    if dtype is None:
        dtype = os.environ.get("OPENFT_TRAIN_DTYPE") or "auto"
    if dtype not in DTYPES:
        raise _bad(f"'dtype' must be one of {', '.join(DTYPES)}, got {dtype!r}")
    method = raw.get("method") or "supervised"
    if method not in ("supervised", "dpo"):
        raise _bad(f"'method' must be 'supervised' or 'dpo', got {method!r}")
    integrations = raw.get("integrations") or []
    if not isinstance(integrations, list) or not all(
            isinstance(i, dict) and i.get("type") == "wandb" and isinstance(i.get("wandb"), dict)
            and isinstance(i["wandb"].get("project"), str) for i in integrations):
        raise _bad("'integrations' must be a list of {type: 'wandb', wandb: {project, ...}}")
    return Spec(
        base_model_dir=_path(raw, "base_model_dir"), train_file=_path(raw, "train_file"),
        validation_file=_path(raw, "validation_file", required=False), output_dir=_path(raw, "output_dir"),
        resume_from=_path(raw, "resume_from", required=False), init_adapter=_path(raw, "init_adapter", required=False),
        hyperparameters=hyper, seed=seed, device=device, max_seq_len=optional_ints["max_seq_len"],
        max_batch_tokens=optional_ints["max_batch_tokens"],
        gradient_checkpointing=checkpointing, attn_implementation=attn, dtype=dtype, method=method,
        integrations=tuple(integrations))


def load(path: str) -> Spec:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise _bad(f"cannot read the spec {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise _bad(f"the spec {path} is not valid JSON: {e.msg}") from e
    return parse(raw)
