"""`python -m openft_trainer SPEC.json` as the worker runs it: the JSON-lines protocol, SIGTERM,
and resuming from the checkpoint SIGTERM left (same losses as an uninterrupted run)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from conftest import addition_examples, make_spec, run_in_process, trainer_env, write_jsonl
from safetensors.torch import load_file

from openft_trainer.protocol import Protocol

STEPS_PER_EPOCH, TOTAL = 4, 8


def start(spec: dict, path, **env) -> subprocess.Popen:
    path.write_text(json.dumps(spec), encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", "openft_trainer", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=trainer_env(**env))


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line must be JSON


def losses(events: list[dict]) -> dict[int, tuple]:
    return {e["step"]: (e["train_loss"], e.get("valid_loss")) for e in events if e["type"] == "metrics"}


@pytest.fixture(scope="module")
def job(model_dirs, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    train = write_jsonl(d / "train.jsonl", addition_examples(8, seed=5))
    valid = write_jsonl(d / "valid.jsonl", addition_examples(2, seed=6))

    def spec(out: str, **kw) -> dict:  # dropout > 0: resuming must restore the RNG too
        return make_spec(model_dirs("llama"), train, d / out, validation_file=valid,
                         hyperparameters={"lora_dropout": 0.1}, **kw)

    return d, spec


@pytest.fixture(scope="module")
def uninterrupted_and_stopped(job):
    d, spec = job
    full = start(spec("full"), d / "full.json")
    # the second run sleeps 0.5 s inside each step, so the SIGTERM sent when step 1 is reported
    # normally lands while step 2 runs (which must then finish and be checkpointed)
    stopped = start(spec("stopped"), d / "stopped.json", OPENFT_TRAINER_STEP_DELAY_S="0.5")
    lines = []
    for line in stopped.stdout:
        lines.append(line)
        event = json.loads(line)
        if event["type"] == "metrics" and event["step"] == 1:
            stopped.send_signal(signal.SIGTERM)
    stopped_err = stopped.stderr.read()
    assert stopped.wait(60) == 0, stopped_err
    out, err = full.communicate(timeout=120)
    assert full.returncode == 0, err
    return events_of(out), events_of("".join(lines))


def test_protocol_events_in_order(uninterrupted_and_stopped):
    events, _ = uninterrupted_and_stopped
    kinds = [e["type"] for e in events]
    assert kinds == (["started"] + ["metrics"] * 4 + ["checkpoint"] + ["metrics"] * 4 + ["checkpoint", "done"])
    started = events[0]
    assert started["total_steps"] == TOTAL and started["n_examples"] == 8 and started["device"] == "cpu"
    assert started["trainable_params"] > 0
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, TOTAL + 1))
    assert [m["epoch"] for m in metrics] == [1] * 4 + [2] * 4
    for m in metrics:
        assert m["total_steps"] == TOTAL and m["tokens"] > 0 and m["steps_per_second"] > 0
        assert 0 <= m["train_mean_token_accuracy"] <= 1 and m["train_loss"] > 0
        assert ("valid_loss" in m) == (m["step"] % STEPS_PER_EPOCH == 0)
    for c, step in zip([e for e in events if e["type"] == "checkpoint"], (4, 8)):
        assert c["step"] == step and c["epoch"] == step // STEPS_PER_EPOCH
        assert c["files"] == ["adapter_config.json", "adapter_model.safetensors", "training_state.pt"]
        assert {"train_loss", "valid_loss", "full_valid_loss", "valid_mean_token_accuracy"} <= set(c["metrics"])
    done = events[-1]
    assert done["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    assert done["adapter_dir"].endswith("/final") and done["trained_tokens"] == metrics[-1]["tokens"]


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(uninterrupted_and_stopped, job):
    full, stopped = uninterrupted_and_stopped
    assert [e["type"] for e in stopped[-2:]] == ["checkpoint", "stopped"]
    step = stopped[-1]["step"]
    assert 0 < step < TOTAL and stopped[-2]["step"] == step
    d, spec = job
    proc = start(spec("stopped", resume_from=stopped[-2]["dir"]), d / "resume.json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    resumed = events_of(out)
    assert resumed[0]["type"] == "started" and resumed[0]["start_step"] == step
    assert sorted(losses(resumed)) == list(range(step + 1, TOTAL + 1))
    expected = {s: v for s, v in losses(full).items() if s > step}
    for s, (train_loss, valid_loss) in losses(resumed).items():
        assert train_loss == pytest.approx(expected[s][0], abs=1e-6), s
        assert valid_loss == pytest.approx(expected[s][1], abs=1e-6) if valid_loss else expected[s][1] is None
    assert resumed[-1]["trained_tokens"] == full[-1]["trained_tokens"]
    a = load_file(f"{full[-1]['adapter_dir']}/adapter_model.safetensors")
    b = load_file(f"{resumed[-1]['adapter_dir']}/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


class StopAfter(Protocol):
    """Emits into a list and raises the stop flag once step `at` is reported (a deterministic SIGTERM)."""

    def __init__(self, stop, at):
        super().__init__(None)
        self.stop, self.at, self.events = stop, at, []

    def emit(self, type_, **fields):
        self.events.append({"type": type_, **fields})
        if type_ == "metrics" and fields["step"] == self.at:
            self.stop.requested = True


def test_mid_epoch_stop_and_resume_in_process(job):
    from openft_trainer import spec as spec_lib
    from openft_trainer.protocol import StopFlag
    from openft_trainer.train import Run

    d, spec = job
    _, reference, _ = run_in_process(spec("ref"))
    flag = StopFlag()
    proto = StopAfter(flag, at=6)
    assert Run(spec_lib.parse(spec("mid")), proto, flag).run() == 0
    assert [e["type"] for e in proto.events[-2:]] == ["checkpoint", "stopped"]
    _, resumed, _ = run_in_process(spec("mid", resume_from=proto.events[-2]["dir"]))
    assert losses(resumed) == {s: v for s, v in losses(reference).items() if s > 6}
    # a checkpoint of another setup is refused, not silently mis-resumed
    from openft_trainer.errors import TrainerError

    other = spec("mid", resume_from=proto.events[-2]["dir"])
    other["hyperparameters"]["batch_size"] = 4
    with pytest.raises(TrainerError) as err:
        run_in_process(other)
    assert err.value.code == "resume_failed"


@pytest.mark.parametrize("case", ["invalid_spec", "model_load_failed"])
def test_error_event_and_exit_code(tmp_path, case, job):
    _, spec = job
    bad = {"train_file": "x.jsonl"} if case == "invalid_spec" else spec("err", base_model_dir=str(tmp_path / "nope"))
    proc = start(bad, tmp_path / "spec.json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    (event,) = events_of(out)
    assert event["type"] == "error" and event["code"] == case and event["message"]


@pytest.mark.parametrize("key", ["n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha",
                                 "lora_dropout", "quantization"])
def test_the_spec_needs_every_hyperparameter_resolved(tmp_path, key):
    """The API resolves "auto"; a trainer that guessed its own defaults would train another job."""
    from openft_trainer import spec as spec_lib
    from openft_trainer.errors import TrainerError

    raw = make_spec(tmp_path, tmp_path / "t.jsonl", tmp_path / "out")
    for value in ("auto", None):
        raw["hyperparameters"][key] = value
        with pytest.raises(TrainerError) as err:
            spec_lib.parse(raw)
        assert err.value.code == "invalid_spec"
        assert f"hyperparameters.{key} must be" in str(err.value), str(err.value)
    del raw["hyperparameters"][key]
    with pytest.raises(TrainerError):
        spec_lib.parse(raw)
