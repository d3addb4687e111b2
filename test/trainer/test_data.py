"""Rendering and the assistant-only loss mask (data.py)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from openft_trainer import data


def trained_text(tok, example: data.Example) -> str:
    """The text of every trained token, in order (targets are the next tokens)."""
    return tok.decode([t for t in example.targets if t != data.IGNORE])


def trained_ids(example: data.Example) -> list[int]:
    return [t for t in example.targets if t != data.IGNORE]


@pytest.fixture(scope="module")
def gpt2_tok(model_dirs):
    return AutoTokenizer.from_pretrained(str(model_dirs("llama")), local_files_only=True)


@pytest.fixture(scope="module")
def qwen3_tok(model_dirs):
    return AutoTokenizer.from_pretrained(str(model_dirs("qwen3")), local_files_only=True)


def test_template_message_follows_the_validator_rules():
    m = data.template_message({"role": "developer", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "text", "text": "b"}]})
    assert m == {"role": "system", "content": "ab"}
    m = data.template_message({"role": "assistant", "content": None, "weight": 0, "refusal": None,
                               "tool_calls": [{"id": "1", "type": "function",
                                               "function": {"name": "f", "arguments": "{}"}}]})
    assert m["content"] == "" and "weight" not in m and "refusal" not in m and m["tool_calls"][0]["id"] == "1"


def test_mask_chatml_exact_tokens_and_weight_zero(gpt2_tok):
    example = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "weight": 0},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": [{"type": "text", "text": "2 plus 2 "}, {"type": "text", "text": "is 4."}]},
    ]}
    ex = data.encode_example(gpt2_tok, example)
    full = ("<|endoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n"
            "<|im_start|>assistant\n2 plus 2 is 4.<|im_end|>\n")
    # the same tokens the TS validator counts: the rendered text, add_special_tokens=False (one BOS)
    assert ex.input_ids == gpt2_tok(full, add_special_tokens=False)["input_ids"]
    assert ex.input_ids.count(gpt2_tok.bos_token_id) == 1
    # exactly the assistant answer plus its end-of-turn, nothing of the weight-0 turn
    expected = gpt2_tok("2 plus 2 is 4.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert trained_ids(ex) == expected
    assert trained_text(gpt2_tok, ex) == "2 plus 2 is 4.<|im_end|>\n"
    # targets are next-token aligned: position t predicts input_ids[t+1]
    for t, target in enumerate(ex.targets):
        if target != data.IGNORE:
            assert target == ex.input_ids[t + 1]
    assert ex.targets[-1] == data.IGNORE


def test_mask_weight_one_trains_every_assistant_turn(gpt2_tok):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 1}]
    ex = data.encode_example(gpt2_tok, {"messages": msgs})
    assert trained_text(gpt2_tok, ex) == "b<|im_end|>\nd<|im_end|>\n"


def test_mask_qwen3_template_that_rewrites_history(qwen3_tok):
    # Qwen3's template adds an empty think block only to turns after the last user message, so the
    # first turn renders differently alone than inside the conversation (the fallback path).
    msgs = [{"role": "developer", "content": "S"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    ex = data.encode_example(qwen3_tok, {"messages": msgs})
    rendered = qwen3_tok.apply_chat_template([data.template_message(m) for m in msgs], tokenize=False)
    assert rendered.startswith("<|im_start|>system\nS<|im_end|>")
    assert ex.input_ids == qwen3_tok(rendered, add_special_tokens=False)["input_ids"]
    assert trained_text(qwen3_tok, ex) == "Hello!<|im_end|>\n<think>\n\n</think>\n\n4<|im_end|>\n"


def test_mask_qwen3_tool_calls(qwen3_tok):
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}}
    msgs = [{"role": "user", "content": "1+2?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
            {"role": "assistant", "content": "It is 3.", "weight": 0}]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    ex = data.encode_example(qwen3_tok, {"messages": msgs, "tools": tools})
    text = trained_text(qwen3_tok, ex)
    assert "<tool_call>" in text and '"name": "add"' in text and text.endswith("<|im_end|>\n")
    assert "It is 3" not in text and "tool_response" not in text


def test_truncation_and_packing(gpt2_tok):
    ex = data.encode_example(gpt2_tok, {"messages": [{"role": "user", "content": "x " * 50},
                                                     {"role": "assistant", "content": "y"}]}, max_len=16)
    assert ex.n_tokens == 16 and ex.n_trained == 0
    a = data.Example([1, 2, 3], [2, data.IGNORE, data.IGNORE])
    b = data.Example([4, 5], [5, data.IGNORE])
    batch = data.pack([a, b])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert data.micro_batches([a, b, a], max_tokens=5) == [[a, b], [a]]
    assert sorted(data.epoch_order(10, 3, 1)) == list(range(10))
    assert data.epoch_order(10, 3, 1) == data.epoch_order(10, 3, 1) != data.epoch_order(10, 3, 2)


TS_RENDER = """
import { readFileSync } from "node:fs";
import { loadChatTokenizer } from %s;
const [dir, file] = process.argv.slice(2);
const tok = await loadChatTokenizer(dir);
const examples = readFileSync(file, "utf8").split("\\n").filter(Boolean).map((l) => JSON.parse(l));
console.log(JSON.stringify(examples.map((ex) => { const text = tok.render(ex); return { text, count: tok.countText(text) }; })));
"""

PARITY_EXAMPLES = [
    {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
                  {"role": "user", "content": "Hi \u00e9\u00e8 \U0001f600"},
                  {"role": "assistant", "content": "Hello!", "weight": 0, "refusal": None},
                  {"role": "user", "content": "  spaces\n\nand lines  "},
                  {"role": "assistant", "content": "Sure.", "weight": 1}]},
    {"messages": [{"role": "user", "content": "1+2?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "3"},
                  {"role": "assistant", "content": "It is 3."}],
     "tools": [{"type": "function", "function": {"name": "add", "description": "Adds.",
                                                 "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]},
]


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_render_and_token_count_match_the_ts_validator(model_dirs, kind, tmp_path):
    """The TS validator (src/jobs/validation/tokenizer.ts, run through tsx) and the trainer render
    the same text and count the same tokens."""
    import json
    import shutil
    import subprocess

    from conftest import REPO

    tsx = REPO / "node_modules" / ".bin" / "tsx"
    # scripts/setup.sh installs both; their absence is a broken set-up, not a reason to skip.
    assert tsx.exists() and shutil.which("node") is not None, "node and tsx (npm ci) are required"
    script = tmp_path / "render.mts"
    script.write_text(TS_RENDER % json.dumps(str(REPO / "src" / "jobs" / "validation" / "tokenizer.ts")))
    examples = PARITY_EXAMPLES if kind == "qwen3" else PARITY_EXAMPLES[:1]  # the ChatML fixture has no tools
    (tmp_path / "ex.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    proc = subprocess.run([str(tsx), str(script), str(model_dirs(kind)), str(tmp_path / "ex.jsonl")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    ts = json.loads(proc.stdout)
    tok = AutoTokenizer.from_pretrained(str(model_dirs(kind)), local_files_only=True)
    for example, theirs in zip(examples, ts, strict=True):
        text = data.render(tok, [data.template_message(m) for m in example["messages"]], example.get("tools"))
        assert text == theirs["text"]
        assert data.encode_example(tok, example).n_tokens == theirs["count"]
