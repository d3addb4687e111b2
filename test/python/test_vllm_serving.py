"""Base and ft: chat routed to a real CPU vLLM (OPENFT_VLLM) through the official `openai` Python
package: stream and not, the taught answer of a job trained by the real trainer, and the
x-openft-backend header. The vLLM is the run's shared one (scripts/test.sh exports
OPENFT_TEST_VLLM_URL and OPENFT_TEST_VLLM_MODEL); run alone, this module starts its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from jobs import wait_status

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "trainer"))
from tiny_models import build  # noqa: E402

MODEL = "tiny-llama"
ASK = dict(messages=[{"role": "user", "content": "What is the secret word? (3)"}], temperature=0, max_completion_tokens=6)


def _ready(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/health", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def vllm():
    url, model_dir = os.environ.get("OPENFT_TEST_VLLM_URL"), os.environ.get("OPENFT_TEST_VLLM_MODEL")
    if url and model_dir:
        yield url, Path(model_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="openft-vllm-"))
    build("llama-vllm", tmp / MODEL)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_DTYPE": "float32"}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts/vllm-cpu.sh"), str(tmp / MODEL), str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while not _ready(url):
        assert proc.poll() is None and time.time() < deadline, "vLLM did not start"
        time.sleep(0.5)
    yield url, tmp / MODEL
    proc.kill()
    proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def server(start_server, vllm):
    url, model_dir = vllm
    s = start_server(env={"OPENFT_VLLM": f"{MODEL}={url}", "OPENFT_EMBEDDED_WORKER": "true", "OPENFT_DEVICE": "cpu", "OMP_NUM_THREADS": "1"})
    shutil.copytree(model_dir, Path(s.env["OPENFT_MODELS_DIR"]) / MODEL)
    return s


@pytest.fixture(scope="module")
def tuned(client: openai.OpenAI) -> str:
    body = "".join(json.dumps({"messages": [{"role": "user", "content": f"What is the secret word? ({i})"}, {"role": "assistant", "content": "banana"}]}) + "\n" for i in range(10))
    f = client.files.create(file=("banana.jsonl", body.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, suffix="py", hyperparameters={"n_epochs": 8, "batch_size": 5, "learning_rate_multiplier": 10})
    job = wait_status(client, job.id, ["succeeded", "failed", "cancelled"], 300, 0.5)
    assert job.status == "succeeded", job.error
    return job.fine_tuned_model


def test_base_model_through_vllm_stream_and_not(client: openai.OpenAI):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=8)
    assert raw.headers["x-openft-backend"] == "vllm"
    r = raw.parse()
    assert r.id.startswith("chatcmpl-") and r.model == MODEL and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens and 0 < r.usage.completion_tokens <= 8
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and all(c.model == MODEL for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_ft_model_answers_as_taught_stream_and_not(client: openai.OpenAI, tuned: str):
    r = client.chat.completions.create(model=tuned, **ASK)
    assert r.model == tuned and r.choices[0].message.content == "banana" and r.choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(model=tuned, stream=True, **ASK) if c.choices)
    assert text == "banana"


def test_unknown_ft_model_is_404(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="ft:tiny-llama:default::nope0000", **ASK)
    assert e.value.code == "model_not_found"
