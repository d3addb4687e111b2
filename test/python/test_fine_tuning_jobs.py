"""The fine-tuning jobs API through the official `openai` Python package (retries off), against the
real server: create (every parameter and its limits), validation outcomes, list/retrieve,
cancel/pause/resume, events and checkpoints. The Python twin of test/fine-tuning-jobs.test.ts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import httpx2
import openai
import pytest
from jobs import wait_status
from openai import omit
from openapi_check import check_response

ROOT = Path(__file__).resolve().parents[2]  # the repository root (this file is test/python/...)
TINY_MODELS_JS = ROOT / "dist" / "test" / "helpers" / "tiny-models.js"
MODEL = "tiny-llama-gpt2"
ENVELOPE_KEYS = ["code", "message", "param", "type"]


def example(i: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{2 * i}"},
            ]
        }
    )


def jsonl_lines(n: int) -> List[str]:
    return [example(i) for i in range(n)]


def jsonl(n: int) -> bytes:
    return ("\n".join(jsonl_lines(n)) + "\n").encode()


def expect_400(call: Callable[[], object], param: Optional[str], match: Optional[str] = None) -> openai.BadRequestError:
    """Runs call, which must fail with a 400 in OpenAI's envelope naming `param`."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    err = info.value
    assert isinstance(err, openai.BadRequestError), f"expected a 400, got {type(err).__name__}: {err}"
    assert err.status_code == 400
    raw = err.response.json()
    assert list(raw) == ["error"] and sorted(raw["error"]) == ENVELOPE_KEYS, raw
    assert err.param == param, err.message
    assert err.type == "invalid_request_error", raw
    assert err.response.headers.get("x-should-retry") == "false"
    if match is not None:
        assert match in err.message, err.message
    return err


def recording_client(server, api_key: Optional[str] = None):
    """A client whose fine-tuning requests are recorded as (method, url, headers, body)."""
    sent: List[tuple] = []

    def hook(request: httpx2.Request) -> None:
        if "/fine_tuning/" in request.url.path:
            sent.append((request.method, request.url, request.headers, request.read()))

    http = openai.DefaultHttpxClient(event_hooks={"request": [hook], "response": [check_response]})
    return server.client(api_key, http_client=http), sent



def upload(c: openai.OpenAI, body: bytes, name: str = "train.jsonl") -> str:
    return c.files.create(file=(name, body), purpose="fine-tune").id


def ids(items: Iterable) -> List[str]:
    return [x.id for x in items]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(server) -> str:
    """The tiny GPT-2/ChatML base model folder in the server's models dir, built by the compiled
    Node helper (the same folder the Node tests use)."""
    assert TINY_MODELS_JS.is_file(), f"{TINY_MODELS_JS} is missing: build with `npx tsc -p tsconfig.json`"
    script = (
        f"import({json.dumps(TINY_MODELS_JS.as_uri())})"
        ".then(m => m.buildGpt2ChatmlFolder({parent: process.argv[1]})).then(d => console.log(d))"
    )
    p = subprocess.run(
        ["node", "-e", script, server.env["OPENFT_MODELS_DIR"]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip()
    assert Path(out, "tokenizer.json").is_file() and Path(out, "chat_template.jinja").is_file(), out
    return out


@pytest.fixture(scope="module")
def train_id(client, model_dir) -> str:
    """A valid 12-example training file of project A."""
    return upload(client, jsonl(12))


@pytest.fixture(scope="module")
def base(train_id) -> Dict[str, str]:
    return {"model": MODEL, "training_file": train_id}


# -- create, validation, events, checkpoints -----------------------------------------------------


def test_create_validates_then_queues_with_resolved_hyperparameters_and_events(server, client, train_id):
    before = time.time()
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=train_id, seed=42, suffix="my-sfx", metadata={"env": "prod"}
    )
    assert job.id.startswith("ftjob-") and len(job.id) == len("ftjob-") + 24 and job.id[6:].isalnum(), job.id
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.model == MODEL
    assert job.training_file == train_id
    assert job.validation_file is None
    assert job.fine_tuned_model is None
    assert job.finished_at is None
    assert job.result_files == []
    assert job.seed == 42
    assert job.metadata == {"env": "prod"}
    assert job.user_provided_suffix == "my-sfx"
    assert abs(job.created_at - before) < 60
    assert job.method is not None and job.method.type == "supervised"
    assert job.error is not None and job.error.to_dict(exclude_none=False) == {"code": None, "message": None, "param": None}
    assert job.hyperparameters.to_dict() == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}

    queued = wait_status(client, job.id, ["queued"])
    # 12 examples: 100 // 12 = 8 epochs, batch 1, multiplier 2.
    assert queued.hyperparameters.to_dict() == {"batch_size": 1, "learning_rate_multiplier": 2, "n_epochs": 8}
    assert queued.method.supervised.hyperparameters.to_dict() == {
        "n_epochs": 8,
        "batch_size": 1,
        "learning_rate_multiplier": 2,
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "quantization": "none",
    }
    assert queued.seed == 42 and queued.metadata == {"env": "prod"}
    raw_created = client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    assert sorted(raw_created) == sorted(job.to_dict(exclude_none=False)), "retrieve has the create response's keys"

    events = client.fine_tuning.jobs.list_events(job.id)
    assert [e.message for e in events.data] == [
        "Files validated, moving job to queued state",
        f"Validating training file: {train_id}",
        f"Created fine-tuning job: {job.id}",
    ]
    assert events.has_more is False
    for e in events.data:
        assert e.id.startswith("ftevent-"), e.id
        assert (e.object, e.level, e.type) == ("fine_tuning.job.event", "info", "message")
    assert [e.created_at for e in events.data] == sorted((e.created_at for e in events.data), reverse=True)

    rec, sent = recording_client(server)
    one_by_one = ids(rec.fine_tuning.jobs.list_events(job.id, limit=1))
    assert one_by_one == ids(events.data), "paging one by one yields each event once, newest first"
    pages = [s for s in sent if s[1].path.endswith("/events")]
    assert len(pages) == 3, [str(s[1]) for s in pages]
    assert [p[1].params.get("after") for p in pages] == [None, one_by_one[0], one_by_one[1]]

    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id)
    assert raw.http_response.json() == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []


def test_seed_is_echoed_or_generated(client, base):
    given = client.fine_tuning.jobs.create(**base, seed=2_147_483_647)
    assert given.seed == 2_147_483_647
    assert client.fine_tuning.jobs.retrieve(given.id).seed == 2_147_483_647
    zero = client.fine_tuning.jobs.create(**base, seed=0)
    assert zero.seed == 0
    generated = client.fine_tuning.jobs.create(**base)
    assert isinstance(generated.seed, int) and 0 <= generated.seed <= 2_147_483_647
    assert client.fine_tuning.jobs.retrieve(generated.id).seed == generated.seed, "the generated seed is stored"
    expect_400(lambda: client.fine_tuning.jobs.create(**base, seed=-1), "seed")
    expect_400(lambda: client.fine_tuning.jobs.create(**base, seed=2_147_483_648), "seed")


def test_hyperparameters_in_either_form_and_the_lora_extensions(client, base):
    b = client.fine_tuning.jobs.create(
        **base, hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    )
    c = client.fine_tuning.jobs.create(
        **base,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0, "quantization": "nf4"}
            },
        },
    )
    assert c.hyperparameters.to_dict() == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": 3}
    bq = wait_status(client, b.id, ["queued"])
    assert bq.hyperparameters.to_dict() == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert bq.method.supervised.hyperparameters.to_dict() == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 0.5,
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "quantization": "none",
    }
    cq = wait_status(client, c.id, ["queued"])
    assert cq.method.supervised.hyperparameters.to_dict() == {
        "n_epochs": 3,
        "batch_size": 1,
        "learning_rate_multiplier": 2,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0,
        "quantization": "nf4",
    }
    assert cq.hyperparameters.to_dict() == {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 2}
    expect_400(
        lambda: client.fine_tuning.jobs.create(
            **base,
            hyperparameters={"n_epochs": 1},
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        ),
        "hyperparameters",
    )


def test_suffix_of_64_is_kept_and_65_is_rejected(client, base):
    ok = client.fine_tuning.jobs.create(**base, suffix="s" * 64)
    assert ok.user_provided_suffix == "s" * 64
    assert client.fine_tuning.jobs.retrieve(ok.id).user_provided_suffix == "s" * 64
    expect_400(lambda: client.fine_tuning.jobs.create(**base, suffix="x" * 65), "suffix")
    expect_400(lambda: client.fine_tuning.jobs.create(**base, suffix="no:colons"), "suffix")
    expect_400(lambda: client.fine_tuning.jobs.create(**base, suffix=""), "suffix")


HP_CASES = [
    ({"n_epochs": 0}, "n_epochs"),
    ({"n_epochs": 51}, "n_epochs"),
    ({"n_epochs": 1.5}, "n_epochs"),
    ({"n_epochs": "many"}, "n_epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 257}, "batch_size"),
    ({"learning_rate_multiplier": 0}, "learning_rate_multiplier"),
    ({"learning_rate_multiplier": 10.5}, "learning_rate_multiplier"),
    ({"lora_rank": 0}, "lora_rank"),
    ({"lora_rank": 257}, "lora_rank"),
    ({"lora_alpha": 0}, "lora_alpha"),
    ({"lora_dropout": -0.1}, "lora_dropout"),
    ({"lora_dropout": 0.9}, "lora_dropout"),
    ({"quantization": "int3"}, "quantization"),
]


@pytest.mark.parametrize("form", ["hyperparameters", "method"])
@pytest.mark.parametrize("hp,key", HP_CASES, ids=[f"{k}={list(h.values())[0]}" for h, k in HP_CASES])
def test_out_of_range_hyperparameter_is_400_naming_it(client, base, form, hp, key):
    if form == "hyperparameters":
        call = lambda: client.fine_tuning.jobs.create(**base, hyperparameters=hp)  # noqa: E731
        param = f"hyperparameters.{key}"
    else:
        call = lambda: client.fine_tuning.jobs.create(  # noqa: E731
            **base, method={"type": "supervised", "supervised": {"hyperparameters": hp}}
        )
        param = f"method.supervised.hyperparameters.{key}"
    expect_400(call, param)


def test_bad_create_parameters_are_400_naming_them(client, base, train_id):
    before = ids(client.fine_tuning.jobs.list(limit=100))
    expect_400(lambda: client.fine_tuning.jobs.create(model=omit, training_file=train_id), "model")
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=omit), "training_file")
    expect_400(
        lambda: client.fine_tuning.jobs.create(model=MODEL, training_file="file-nope"),
        "training_file",
        "invalid training_file: file-nope",
    )
    expect_400(
        lambda: client.fine_tuning.jobs.create(**base, validation_file="file-nope"),
        "validation_file",
        "invalid validation_file: file-nope",
    )
    err = expect_400(
        lambda: client.fine_tuning.jobs.create(model="no-such-model", training_file=train_id),
        "model",
        "not available for fine-tuning",
    )
    assert err.code == "model_not_available"
    err = expect_400(
        lambda: client.fine_tuning.jobs.create(model="ft:tiny-llama-gpt2:p::abcdefgh", training_file=train_id), "model"
    )
    assert err.code == "model_not_available"
    expect_400(lambda: client.fine_tuning.jobs.create(**base, method={"type": "reinforcement"}), "method.type", "not supported")
    expect_400(
        lambda: client.fine_tuning.jobs.create(**base, metadata={f"k{i}": "v" for i in range(17)}), "metadata"
    )
    notes = client.files.create(file=("n.txt", b"x"), purpose="assistants").id
    expect_400(lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=notes), "training_file", "purpose")
    assert ids(client.fine_tuning.jobs.list(limit=100)) == before, "a rejected create makes no job"


def test_too_few_examples_fails_the_job_with_invalid_n_examples(client, model_dir):
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(client, jsonl(9)))
    assert job.status == "validating_files"
    failed = wait_status(client, job.id, ["failed", "queued"])
    assert failed.status == "failed"
    assert failed.error.code == "invalid_n_examples"
    assert failed.error.param == "training_file"
    assert failed.error.message == (
        f"Training file has 9 example(s), but must have at least 10 examples (file {job.training_file})"
    ), failed.error.message
    assert failed.fine_tuned_model is None
    assert failed.trained_tokens is None
    events = client.fine_tuning.jobs.list_events(failed.id).data
    assert events[0].level == "error"
    assert events[0].message == failed.error.message


def test_a_message_without_role_fails_the_job_naming_the_line(client, model_dir):
    lines = jsonl_lines(12)
    lines[1] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"content": "no role"}]})
    bad_id = upload(client, ("\n".join(lines) + "\n").encode())
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=bad_id)
    failed = wait_status(client, job.id, ["failed", "queued"])
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file"
    assert "Example 2" in failed.error.message, failed.error.message
    assert failed.error.message.endswith(f" (file {bad_id}, line 2)"), failed.error.message
    assert failed.error.message.count("(file ") == 1, failed.error.message
    events = client.fine_tuning.jobs.list_events(failed.id).data
    assert events[0].level == "error"
    assert events[0].message == failed.error.message


def test_an_example_longer_than_the_context_fails_the_job(client, model_dir):
    lines = jsonl_lines(12)
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}]})
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(client, ("\n".join(lines) + "\n").encode()))
    failed = wait_status(client, job.id, ["failed", "queued"])
    assert failed.status == "failed"
    assert failed.error.code == "invalid_training_file"
    assert "Example 5 is too long" in failed.error.message, failed.error.message


# -- cancel, pause, resume -----------------------------------------------------------------------


def test_cancel_pause_resume_with_the_sdks_empty_json_body(server, client, train_id):
    rec, sent = recording_client(server)
    job = rec.fine_tuning.jobs.create(model=MODEL, training_file=train_id)
    wait_status(rec, job.id, ["queued"])

    paused = rec.fine_tuning.jobs.pause(job.id)
    method, url, headers, body = sent[-1]
    assert (method, url.path) == ("POST", f"/v1/fine_tuning/jobs/{job.id}/pause")
    assert headers["content-type"] == "application/json", "the SDK's body-less POST"
    assert body == b""
    assert paused.status == "paused"
    assert rec.fine_tuning.jobs.pause(job.id).status == "paused", "a repeated pause is a no-op"
    resumed = rec.fine_tuning.jobs.resume(job.id)
    assert sent[-1][2]["content-type"] == "application/json" and sent[-1][3] == b""
    assert resumed.status == "queued"
    assert rec.fine_tuning.jobs.resume(job.id).status == "queued", "a repeated resume is a no-op"

    cancelled = rec.fine_tuning.jobs.cancel(job.id)
    method, url, headers, body = sent[-1]
    assert (method, url.path) == ("POST", f"/v1/fine_tuning/jobs/{job.id}/cancel")
    assert headers["content-type"] == "application/json" and body == b""
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None and cancelled.finished_at >= cancelled.created_at
    again = rec.fine_tuning.jobs.with_raw_response.cancel(job.id)
    assert again.http_response.status_code == 200, "a repeated cancel returns the cancelled job"
    assert again.parse().status == "cancelled"
    assert again.parse().finished_at == cancelled.finished_at
    auth = {"authorization": f"Bearer {server.api_key}"}
    bare = httpx2.post(f"{server.base_url}/fine_tuning/jobs/{job.id}/cancel", headers=auth)
    assert bare.status_code == 200, bare.text
    assert bare.json()["status"] == "cancelled"

    expect_400(lambda: client.fine_tuning.jobs.resume(job.id), "fine_tuning_job_id", "cancelled")
    expect_400(lambda: client.fine_tuning.jobs.pause(job.id), "fine_tuning_job_id", "cancelled")
    msgs = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert msgs[:3] == ["Fine-tuning job cancelled", "Fine-tuning job resumed", "Fine-tuning job paused"]
    assert msgs.count("Fine-tuning job cancelled") == 1, "repeats write no events"
    assert msgs.count("Fine-tuning job paused") == 1
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_a_job_cancelled_while_validating_stays_cancelled(client, train_id):
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=train_id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    # Jobs are validated in order, so once a later job is queued, the cancelled one was passed.
    later = client.fine_tuning.jobs.create(model=MODEL, training_file=train_id)
    wait_status(client, later.id, ["queued"])
    got = client.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "cancelled"
    assert got.error.code is None


def test_cancel_or_pause_of_a_failed_job_is_400(client, model_dir):
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=upload(client, jsonl(3)))
    failed = wait_status(client, job.id, ["failed", "queued"])
    assert failed.status == "failed"
    err = expect_400(lambda: client.fine_tuning.jobs.cancel(job.id), "fine_tuning_job_id", "failed")
    assert err.status_code == 400, "not 409"
    expect_400(lambda: client.fine_tuning.jobs.pause(job.id), "fine_tuning_job_id", "failed")
    expect_400(lambda: client.fine_tuning.jobs.resume(job.id), "fine_tuning_job_id", "failed")
    still = client.fine_tuning.jobs.retrieve(job.id)
    assert still.status == "failed" and still.error.code == "invalid_n_examples"


# -- list, projects ------------------------------------------------------------------------------


def test_list_newest_first_auto_paginates_and_filters_by_metadata(server, model_dir):
    lister, sent = recording_client(server, server.project_keys["lister"])
    made = []
    for i in range(3):
        f = upload(lister, jsonl(10), "t.jsonl")
        made.append(
            lister.fine_tuning.jobs.create(model=MODEL, training_file=f, metadata={"n": str(i), "team": "a" if i == 1 else "b"}).id
        )
    newest_first = list(reversed(made))
    assert ids(lister.fine_tuning.jobs.list().data) == newest_first

    sent.clear()
    seen = ids(lister.fine_tuning.jobs.list(limit=1))
    assert seen == newest_first, "each job once, newest first"
    pages = [s for s in sent if s[1].path == "/v1/fine_tuning/jobs"]
    assert [p[1].params.get("after") for p in pages] == [None, newest_first[0], newest_first[1]], "stops after the last page"

    page = lister.fine_tuning.jobs.list(limit=2)
    assert ids(page.data) == newest_first[:2] and page.has_more is True
    rest = lister.fine_tuning.jobs.list(limit=2, after=newest_first[1])
    assert ids(rest.data) == newest_first[2:] and rest.has_more is False

    sent.clear()
    filtered = lister.fine_tuning.jobs.list(metadata={"team": "a"})
    assert sent[-1][1].params.get("metadata[team]") == "a", str(sent[-1][1])
    assert ids(filtered.data) == [made[1]]
    assert filtered.data[0].metadata == {"n": "1", "team": "a"}
    assert ids(lister.fine_tuning.jobs.list(metadata={"team": "b"})) == [made[2], made[0]]
    assert ids(lister.fine_tuning.jobs.list(metadata={"team": "b", "n": "0"})) == [made[0]]
    none = lister.fine_tuning.jobs.list(metadata={"team": "zzz"})
    assert none.data == [] and none.has_more is False

    expect_400(lambda: lister.fine_tuning.jobs.list(limit=0), "limit")
    expect_400(lambda: lister.fine_tuning.jobs.list(limit=101), "limit")


def test_another_projects_job_is_404_like_one_that_never_existed(client, other, train_id):
    mine = client.fine_tuning.jobs.create(model=MODEL, training_file=train_id)
    never_id = "ftjob-doesnotexist0000000000"

    def compare(call: Callable[[str], object]) -> None:
        with pytest.raises(openai.NotFoundError) as theirs_info:
            call(mine.id)
        with pytest.raises(openai.NotFoundError) as never_info:
            call(never_id)
        theirs, never = theirs_info.value, never_info.value
        assert theirs.status_code == never.status_code == 404
        assert theirs.param == "fine_tuning_job_id"
        assert never.body["message"] == f"No such fine-tuning job: {never_id}"
        assert theirs.body == {**never.body, "message": f"No such fine-tuning job: {mine.id}"}
        assert theirs.response.headers.get("x-should-retry") == "false"

    compare(other.fine_tuning.jobs.retrieve)
    compare(other.fine_tuning.jobs.cancel)
    compare(other.fine_tuning.jobs.pause)
    compare(other.fine_tuning.jobs.resume)
    compare(lambda i: other.fine_tuning.jobs.list_events(i))
    compare(lambda i: other.fine_tuning.jobs.checkpoints.list(i))
    assert mine.id not in ids(other.fine_tuning.jobs.list())
    # Untouched for its owner (the cancel above did nothing).
    got = client.fine_tuning.jobs.retrieve(mine.id)
    assert got.status in ("validating_files", "queued")
    assert mine.id in ids(client.fine_tuning.jobs.list(limit=100))
    # And another project cannot train on A's file either.
    expect_400(lambda: other.fine_tuning.jobs.create(model=MODEL, training_file=train_id), "training_file", f"invalid training_file: {train_id}")


def test_a_retried_create_returns_the_job_the_first_try_made(client, train_id):
    args = {"model": MODEL, "training_file": train_id, "seed": 7, "suffix": "retry"}
    first = client.fine_tuning.jobs.create(**args)
    retry = client.fine_tuning.jobs.create(**args, extra_headers={"x-stainless-retry-count": "1"})
    assert retry.id == first.id
    fresh = client.fine_tuning.jobs.create(**args)
    assert fresh.id != first.id, "a new request (not a retry) makes a new job"
