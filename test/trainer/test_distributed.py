"""Training on several processes (torchrun, gloo on this CPU): the same numbers as one process,
FSDP, and checkpoints that resume on a different number of processes.

Tolerances: the ranks sum their losses and gradients in a different order than one process does,
so the results agree to float32 rounding, not bit for bit: losses to 1e-5 (relative), and the
trained adapters' logits to 1e-4 (absolute, logits of about +-1) after 4 optimizer steps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import (addition_examples, adapter_logits, make_spec, run_in_process, saved_adapter_dir, torchrun_cmd,
                      train_losses, trainer_env, write_jsonl)

LOSS_RTOL, LOGITS_ATOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def job(model_dirs, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    train = write_jsonl(d / "train.jsonl", addition_examples(10, seed=11))
    valid = write_jsonl(d / "valid.jsonl", addition_examples(3, seed=12))

    def spec(out: str, **kw) -> dict:  # 5 examples per step (uneven over 2 ranks), 2 epochs = 4 steps
        return make_spec(model_dirs("llama"), train, d / out, validation_file=valid, dtype="float32",
                         hyperparameters={"batch_size": 5, "lora_dropout": 0.0}, **kw)

    return d, spec


@pytest.fixture(scope="module")
def one_process(job):
    _, spec = job
    _, events, code = run_in_process(spec("one"))
    assert code == 0
    return events


def close(a: float, b: float) -> bool:
    return abs(a - b) <= LOSS_RTOL * max(1.0, abs(b))


def check_same_training(model_dir, events: list[dict], reference: list[dict]) -> None:
    assert events[0]["type"] == "started" and events[0]["processes"] == 2
    ours, ref = train_losses(events), train_losses(reference)
    assert len(ours) == len(ref) == 4
    assert close(ours[0], ref[0]), f"first-step loss {ours[0]} vs one process {ref[0]}"
    assert all(close(a, b) for a, b in zip(ours, ref)), f"{ours} vs {ref}"
    valid = [e["valid_loss"] for e in events if "valid_loss" in e]
    ref_valid = [e["valid_loss"] for e in reference if "valid_loss" in e]
    assert len(valid) == 2 and all(close(a, b) for a, b in zip(valid, ref_valid))
    assert events[-1]["trained_tokens"] == reference[-1]["trained_tokens"]
    prompt = list(range(5, 40))
    diff = (adapter_logits(model_dir, saved_adapter_dir(events), prompt)
            - adapter_logits(model_dir, saved_adapter_dir(reference), prompt)).abs().max().item()
    assert diff <= LOGITS_ATOL, f"adapter logits differ by {diff}"


def test_two_processes_train_as_one(job, one_process, model_dirs):
    from conftest import run_torchrun

    d, spec = job
    events, code, err = run_torchrun(spec("two"), d / "two.json")
    assert code == 0, err[-3000:]
    assert events[0]["sharding"] == "none"
    # rank 0 alone reports: one event of each step, one checkpoint per epoch
    assert [e["step"] for e in events if e["type"] == "metrics"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4]
    check_same_training(model_dirs("llama"), events, one_process)


def test_fsdp_on_two_processes(job, one_process, model_dirs):
    from conftest import run_torchrun

    d, spec = job
    events, code, err = run_torchrun(spec("fsdp", sharding="fsdp"), d / "fsdp.json")
    assert code == 0, err[-3000:]
    assert events[0]["sharding"] == "fsdp"
    check_same_training(model_dirs("llama"), events, one_process)  # the adapter loads in peft


LAUNCHER_REPORT = """openft_trainer FAILED
Failures:
[1]:
  time      : 2026-12-05_18:18:44
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 20204)  (SIGTERM)
Root Cause (first observed failure):
[0]:
  time      : 2026-12-05_18:18:44
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 20205)  (SIGABRT)
"""


def test_killed_rank_reads_torchruns_report():
    """run_torchrun's retry rule is the worker's: a process dead of a signal other than torchrun's
    SIGTERM (here the report CI printed); a process's own error exit or SIGTERM alone is not one."""
    from conftest import killed_rank

    assert killed_rank(LAUNCHER_REPORT) == (1, -6)
    assert killed_rank(LAUNCHER_REPORT.replace("-6 (pid", "1 (pid")) is None
    assert killed_rank("no report") is None


class StopAt:
    """A protocol that records events and asks for a stop once step `at` is reported."""

    def __init__(self, flag, at: int):
        self.flag, self.at, self.events = flag, at, []

    def emit(self, type_, **fields):
        self.events.append({"type": type_, **fields})
        if type_ == "metrics" and fields["step"] == self.at:
            self.flag.requested = True


def stop_on_two_processes(spec: dict, path, at: int) -> list[dict]:
    """torchrun on 2 processes, SIGTERM once step `at` is reported; its events."""
    path.write_text(json.dumps(spec), encoding="utf-8")
    proc = subprocess.Popen(torchrun_cmd(path, 2), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=trainer_env(OPENFT_TRAINER_STEP_DELAY_S="0.5"))
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "metrics" and events[-1]["step"] == at:
            proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every process
    proc.wait(timeout=300)
    return events


def check_resumed(events: list[dict], reference: list[dict], start: int, processes: int) -> None:
    assert events[0]["type"] == "started" and events[0]["start_step"] == start, events[0]
    assert events[0]["processes"] == processes
    ours = train_losses(events)
    ref = train_losses(reference)[start:start + len(ours)]
    assert ours and all(close(a, b) for a, b in zip(ours, ref)), f"{ours} vs {ref}"


def test_resume_on_another_number_of_processes(job, one_process):
    """1 process stopped after step 1 -> resumed on 2, stopped after step 2 -> resumed on 1 to the
    end: the same losses as the uninterrupted single process throughout."""
    from openft_trainer import spec as spec_lib
    from openft_trainer.protocol import StopFlag
    from openft_trainer.train import Run

    d, spec = job
    flag = StopFlag()
    first = StopAt(flag, at=1)
    assert Run(spec_lib.parse(spec("chain")), first, flag).run() == 0
    assert [e["type"] for e in first.events[-2:]] == ["checkpoint", "stopped"] and first.events[-1]["step"] == 1

    second = stop_on_two_processes(spec("chain", resume_from=first.events[-2]["dir"]), d / "chain2.json", at=2)
    check_resumed(second, one_process, 1, 2)
    # both processes stopped after the same step (2 or 3, as the signal lands); each checkpoint
    # (step 2 ends an epoch) written once, by process 0, the last one at the stop
    stopped = second[-1]["step"]
    assert second[-1]["type"] == "stopped" and stopped in (2, 3), second
    ckpts = [e["step"] for e in second if e["type"] == "checkpoint"]
    assert ckpts[-1] == stopped and len(ckpts) == len(set(ckpts))

    _, third, code = run_in_process(spec("chain", resume_from=second[-2]["dir"]))
    assert code == 0
    check_resumed(third, one_process, stopped, 1)
    assert len(train_losses(third)) == 4 - stopped
