"""DPO through the official `openai` Python package (retries off): method.dpo's parameters and the
ranges of beta and rpo_alpha, the job echoing method.dpo, a bad preference file failing the job with
the line, and one DPO job (rpo_alpha 0.5) end to end on a tiny Llama through the embedded worker and
the real trainer. The Python twin of test/dpo.test.ts."""

from __future__ import annotations

import json
import math
import subprocess

import openai
import pytest
from jobs import wait_status
from test_fine_tuning_jobs import ROOT, expect_400, upload

MODEL = "tiny-llama"
TINY_WEIGHTS_JS = ROOT / "dist" / "test" / "helpers" / "tiny-weights.js"


def pairs(n: int, older_names: bool = False) -> bytes:
    keys = ("preferred_completion", "non_preferred_completion") if older_names else (
        "preferred_output", "non_preferred_output")
    rows = [{"input": {"messages": [{"role": "user", "content": f"Name fruit number {i}."}]},
             keys[0]: [{"role": "assistant", "content": "Apple. Done"}],
             keys[1]: [{"role": "assistant", "content": f"Not sure, maybe fruit {i} is a banana?"}]} for i in range(n)]
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def dpo(**hyperparameters) -> dict:
    return {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}



@pytest.fixture(scope="module")
def server(start_server):
    return start_server(env={"OPENFT_EMBEDDED_WORKER": "true", "OPENFT_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
                             "WANDB_MODE": "offline"})


@pytest.fixture(scope="module")
def pairs_id(server, client) -> str:
    assert TINY_WEIGHTS_JS.is_file(), f"{TINY_WEIGHTS_JS} is missing: build with `npx tsc -p tsconfig.json`"
    script = f"import({json.dumps(TINY_WEIGHTS_JS.as_uri())}).then(m => m.buildTinyModel('llama', process.argv[1]))"
    models = server.env["OPENFT_MODELS_DIR"]
    p = subprocess.run(["node", "-e", script, f"{models}/{MODEL}"], capture_output=True, text=True, timeout=300,
                       cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    return upload(client, pairs(10, older_names=True))


@pytest.mark.parametrize("beta", [0, -1, 2.5, "high"])
def test_beta_out_of_range_is_400_naming_it(client, pairs_id, beta):
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=pairs_id, method=dpo(beta=beta)),
               "method.dpo.hyperparameters.beta")


@pytest.mark.parametrize("rpo_alpha", [-1, 11, "lots"])
def test_rpo_alpha_out_of_range_is_400_naming_it(client, pairs_id, rpo_alpha):
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=pairs_id,
                                                      method=dpo(rpo_alpha=rpo_alpha)),
               "method.dpo.hyperparameters.rpo_alpha")


def test_dpo_hyperparameters_belong_in_method_dpo(client, pairs_id):
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=pairs_id, method=dpo(),
                                                      hyperparameters={"n_epochs": 2}), "hyperparameters")
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=pairs_id,
                                                      method=dpo(temperature=1)), "method.dpo.hyperparameters.temperature")


def test_a_chat_file_fails_a_dpo_job_naming_the_line(client, pairs_id):
    chat = "\n".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "yo"}]}) for _ in range(10))
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(client, chat.encode()), method=dpo())
    failed = wait_status(client, job.id, ["failed", "queued", "running", "succeeded"], 60)
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert "Example 1, Unexpected format, expected a preference example: field 'input' is missing" in failed.error.message
    assert failed.error.message.endswith("line 1)")


def test_a_dpo_job_trains_end_to_end(client, pairs_id):
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=pairs_id, suffix="py-dpo",
                                         method=dpo(n_epochs=1, batch_size=5, beta=0.25, learning_rate_multiplier=5,
                                                    rpo_alpha=0.5))
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.beta == 0.25
    assert job.method.dpo.hyperparameters.to_dict()["rpo_alpha"] == 0.5
    done = wait_status(client, job.id, ["succeeded", "failed", "cancelled"], 300)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:tiny-llama:default:py-dpo:")
    assert done.method.dpo.hyperparameters.n_epochs == 1
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"][::-1]
    assert [m["step"] for m in metrics] == [1, 2]
    # policy == reference (the base) at first, so DPO's part is log 2; rpo_alpha adds half the
    # preferred outputs' mean token NLL, several nats on the untrained tiny model (test/dpo.test.ts
    # holds "auto", pure DPO, to log 2)
    assert metrics[0]["train_loss"] > math.log(2) + 1
    assert {"train_reward_accuracy", "train_reward_margin"} <= set(metrics[-1])
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
    assert checkpoint.step_number == 2 and "train_reward_margin" in checkpoint.to_dict()["metrics"]
