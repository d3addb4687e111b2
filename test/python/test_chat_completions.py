"""POST /v1/chat/completions through the official `openai` Python package (retries off) against the
real server and the real inference engine (fp32 weights, exact) on a tiny random Llama built by the
trainer suite's fixture. The Python twin of test/chat-completions.test.ts's base-model part."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "trainer"))
from tiny_models import build  # noqa: E402

MODEL = "tiny-llama"
HI = dict(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=8)


@pytest.fixture(scope="module")
def server(start_server):
    s = start_server(env={"OPENFT_SERVING_MODE": "fp32", "OPENFT_SERVING_THREADS": "1"})
    build("llama", Path(s.env["OPENFT_MODELS_DIR"]) / MODEL)
    return s


def test_completion_shape_and_usage(client: openai.OpenAI):
    r = client.chat.completions.create(**HI)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 8


def test_n_stop_and_max_tokens(client: openai.OpenAI):
    two = client.chat.completions.create(**HI, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    one = client.chat.completions.create(**{**HI, "max_completion_tokens": None}, max_tokens=1)
    assert one.choices[0].finish_reason == "length" and one.usage.completion_tokens == 1
    greedy = {**HI, "temperature": 0, "max_completion_tokens": 24}
    full = client.chat.completions.create(**greedy).choices[0].message.content
    assert len(full) >= 6, repr(full)
    stop = full[3:6]
    cut = client.chat.completions.create(**greedy, stop=stop)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]


def test_seed_reproducible(client: openai.OpenAI):
    kw = {**HI, "temperature": 1, "max_completion_tokens": 24}
    a = client.chat.completions.create(**kw, seed=11)
    b = client.chat.completions.create(**kw, seed=11)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_logprobs(client: openai.OpenAI):
    r = client.chat.completions.create(**HI, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert content
    for t in content:
        assert isinstance(t.token, str) and t.logprob <= 0 and isinstance(t.bytes, list)
        assert len(t.top_logprobs) == 3
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6
    assert b"".join(bytes(t.bytes) for t in content).decode() == r.choices[0].message.content


def test_stream_iteration_matches_the_completion(client: openai.OpenAI):
    greedy = {**HI, "temperature": 0, "max_completion_tokens": 12}
    whole = client.chat.completions.create(**greedy)
    chunks = list(client.chat.completions.create(**greedy, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize(
    "extra,status,param",
    [
        ({"model": "nope"}, 404, "model"),
        ({"temperature": 2.5}, 400, "temperature"),
        ({"top_logprobs": 2}, 400, "top_logprobs"),
        ({"presence_penalty": 3}, 400, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}, 400, "messages[0].content[0].type"),
        ({"messages": [{"role": "user", "content": "word " * 600}]}, 400, "messages"),
    ],
)
def test_errors(client: openai.OpenAI, extra, status, param):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**{**HI, **extra})
    assert e.value.status_code == status
    body = e.value.body
    assert body["param"] == param and set(body) == {"message", "type", "param", "code"}
