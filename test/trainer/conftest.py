"""Shared fixtures: tiny random models with real tokenizers (tiny_models.py), small chat datasets,
and helpers to run the trainer in-process or as `python -m openft_trainer`."""

from __future__ import annotations

import io
import json
import os
import random
import re
import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TRAINER_SRC = REPO / "src" / "engine" / "trainer"
sys.path.insert(0, str(TRAINER_SRC))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# One thread: the models are tiny, and on a busy 2-core machine two OpenMP threads waiting on each
# other made a 64x64 matmul ~300x slower (3.5 ms instead of 11 us). Subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import tiny_models  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """kind -> folder, built lazily once per session."""
    root = tmp_path_factory.mktemp("models")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = tiny_models.build(kind, root / kind)
        return built[kind]

    return get


def pytest_configure(config):
    # raised inside bitsandbytes/torch on import; not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def addition_examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        rows.append({"messages": [
            {"role": "system", "content": "You add numbers."},
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def make_spec(model_dir, train_file, output_dir, **overrides) -> dict:
    hp = {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 10.0, "lora_rank": 8, "lora_alpha": 16,
          "lora_dropout": 0.0, "quantization": "none"}
    hp.update(overrides.pop("hyperparameters", {}))
    spec = {"base_model_dir": str(model_dir), "train_file": str(train_file), "validation_file": None,
            "output_dir": str(output_dir), "resume_from": None, "init_adapter": None, "hyperparameters": hp,
            "seed": 7, "device": "cpu"}
    spec.update(overrides)
    return spec


def run_in_process(spec: dict):
    """Runs the trainer in this process; returns (Run, events, exit code)."""
    from openft_trainer import spec as spec_lib
    from openft_trainer.protocol import Protocol, StopFlag
    from openft_trainer.dpo import DpoRun
    from openft_trainer.train import Run

    out = io.StringIO()
    parsed = spec_lib.parse(spec)
    run = (DpoRun if parsed.method == "dpo" else Run)(parsed, Protocol(out), StopFlag())
    code = run.run()
    return run, [json.loads(line) for line in out.getvalue().splitlines()], code


def train_losses(events: list[dict]) -> list[float]:
    """The training loss of each step a run reported."""
    return [e["train_loss"] for e in events if e["type"] == "metrics"]


def saved_adapter_dir(events: list[dict]) -> str:
    """The adapter folder of a run that finished; checks it saved exactly the PEFT files."""
    done = events[-1]
    assert done["type"] == "done" and done["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    return done["adapter_dir"]


def fp32_base(model_dir):
    """The base model as transformers loads it in fp32 (what peft applies a saved adapter to)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)


def trainer_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(TRAINER_SRC), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def torchrun_cmd(spec_path, processes: int) -> list[str]:
    """The trainer as the worker launches it on several processes (torchrun, gloo on the CPU)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "openft_trainer", str(spec_path)]


def killed_rank(launcher_stderr: str) -> tuple[int, int] | None:
    """(rank, exit code) of a process that torchrun reports killed by a signal other than its own
    SIGTERM, as the worker reads it (src/engine/worker/torchrun.ts failedRanks)."""
    for m in re.finditer(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", launcher_stderr):
        if int(m[2]) < 0 and int(m[2]) != -15:
            return int(m[1]), int(m[2])
    return None


def run_torchrun(spec: dict, path: Path, processes: int = 2, timeout: float = 400, **env):
    """Runs the trainer on `processes` processes; returns (events, exit code, stderr).

    An attempt in which a process died of a signal is run once more from scratch, as the worker
    retries it (trainer-runner.ts: retryable); the first attempt's log goes into a warning, which
    pytest's summary shows, so the crash stays visible. (CI saw it once: a rank aborted in native
    code, "terminate called without an active exception", under FSDP on gloo while the other lane
    loaded the CPU; the trainer now dumps every thread's Python stack on such a death.)"""
    import shutil
    import subprocess

    path.write_text(json.dumps(spec), encoding="utf-8")
    for attempt in (1, 2):
        done = subprocess.run(torchrun_cmd(path, processes), capture_output=True, text=True, timeout=timeout,
                              env=trainer_env(**env))
        killed = killed_rank(done.stderr) if done.returncode != 0 else None
        if killed is None or attempt == 2:
            break
        warnings.warn(f"torchrun attempt 1: process {killed[0]} died with exit code {killed[1]}; "
                      f"run again. The log ends with:\n{done.stderr[-4000:]}")
        shutil.rmtree(spec["output_dir"], ignore_errors=True)
    return [json.loads(line) for line in done.stdout.splitlines()], done.returncode, done.stderr


def adapter_logits(model_dir, adapter_dir, prompt_ids: list[int]):
    """The logits of the fp32 base with a saved adapter applied by peft."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(fp32_base(model_dir), adapter_dir).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt_ids])).logits[0]
