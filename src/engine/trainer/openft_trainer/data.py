"""Training data: OpenAI chat JSONL -> the base model's chat template -> token ids and loss targets
-> packed, padding-free batches.

Rendering follows src/jobs/validation/tokenizer.ts exactly, so the trainer sees the token counts the
API billed and checked: text parts joined with "", null content -> "", `developer` renamed to
`system`, `weight` and `refusal` not passed to the template, `tools` passed only when present, no
generation prompt, and the rendered text tokenized with add_special_tokens=False.

Loss mask (no {% generation %} markers needed): for assistant message i with weight != 0, the
trained characters run from the end of render(messages[:i], add_generation_prompt=True) to the end
of render(messages[:i+1]); that span holds the assistant content plus the end-of-turn text the
template writes after it (ChatML: "<|im_end|>\\n"). Some templates render an earlier assistant turn
differently once later messages follow (Qwen3 adds "<think>\\n\\n</think>\\n\\n" only to turns after
the last user message), so render(messages[:i+1]) is not always a prefix of the full text; then
the turn ends at the first occurrence, in the full text, of the last special token the template
put after the content (plus what followed it in the single-turn rendering).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .errors import TrainerError

IGNORE = -100  # target of positions that are not trained


@dataclass
class Example:
    input_ids: list[int]
    targets: list[int]  # targets[t]: the token to predict after position t, or IGNORE

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.targets if t != IGNORE)


def flatten_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def template_message(message: dict) -> dict:
    role = message.get("role")
    out = {"role": "system" if role == "developer" else role, "content": flatten_content(message.get("content"))}
    for key in ("name", "tool_calls", "function_call", "tool_call_id"):
        if key in message and message[key] is not None:
            out[key] = message[key]
    return out


def render(tokenizer, messages: list[dict], tools: list | None, add_generation_prompt: bool = False) -> str:
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _special_strings(tokenizer) -> list[str]:
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials.update(tokenizer.all_special_tokens)
    return sorted((s for s in specials if s), key=len, reverse=True)


def _turn_end_fallback(full: str, start: int, turn: str, specials: list[str]) -> int:
    """End of the assistant turn in `full` when the single-turn rendering `turn` is not a prefix."""
    best = None  # (position in turn, token) of the last special token in the turn
    for s in specials:
        k = turn.rfind(s)
        if k >= 0 and (best is None or k > best[0]):
            best = (k, s)
    if best is None:
        raise ValueError("the chat template renders this assistant turn differently depending on the "
                         "messages after it and puts no special end-of-turn token after it")
    k, token = best
    tail = turn[k + len(token):]
    at = full.find(token, start)
    if at < 0:
        raise ValueError(f"cannot find the end-of-turn token {token!r} of an assistant turn")
    end = at + len(token)
    return end + len(tail) if full.startswith(tail, end) else end


def assistant_spans(tokenizer, messages: list[dict], tools: list | None, full: str,
                    specials: list[str] | None = None) -> list[tuple[int, int]]:
    """Character spans of `full` (the rendered conversation) to train on."""
    spans = []
    templated = [template_message(m) for m in messages]
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        prompt = render(tokenizer, templated[:i], tools, add_generation_prompt=True) if i else ""
        start = _common_prefix(prompt, full)
        turn = render(tokenizer, templated[: i + 1], tools)
        if full.startswith(turn):
            end = len(turn)
        else:
            if specials is None:
                specials = _special_strings(tokenizer)
            end = _turn_end_fallback(full, start, turn[_common_prefix(prompt, turn):], specials)
            end = max(end, start)
        spans.append((start, end))
    return spans


def token_mask(offsets: list[tuple[int, int]], text_len: int, spans: list[tuple[int, int]]) -> list[bool]:
    """Token t is trained when the characters it covers overlap a span. A token covers from its
    start to the next token's start (so trimmed offsets lose no whitespace) and at least one char
    (pieces of one multi-byte character share its offsets)."""
    mask = []
    for t, (lo, hi) in enumerate(offsets):
        nxt = offsets[t + 1][0] if t + 1 < len(offsets) else text_len
        hi = max(hi, nxt, lo + 1)
        mask.append(any(lo < e and hi > s for s, e in spans))
    return mask


def encode_example(tokenizer, example: dict, max_len: int | None = None, specials: list[str] | None = None) -> Example:
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("field 'messages' must be a non-empty array of message objects")
    tools = example.get("tools") or None
    full = render(tokenizer, [template_message(m) for m in messages], tools)
    spans = assistant_spans(tokenizer, messages, tools, full, specials)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = token_mask([tuple(o) for o in enc["offset_mapping"]], len(full), spans)
    if max_len is not None and len(ids) > max_len:
        ids, mask = ids[:max_len], mask[:max_len]
    targets = [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Example(ids, targets)


def read_jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TrainerError("invalid_data", f"{path}: line {n} is not valid JSON: {e.msg}") from e
                if not isinstance(row, dict):
                    raise TrainerError("invalid_data", f"{path}: line {n} is not a JSON object")
                rows.append(row)
    except OSError as e:
        raise TrainerError("invalid_data", f"cannot read {path}: {e.strerror}") from e
    if not rows:
        raise TrainerError("invalid_data", f"{path} holds no examples")
    return rows


def load_examples(path: str, tokenizer, max_len: int | None) -> list[Example]:
    specials = _special_strings(tokenizer)
    out = []
    for n, row in enumerate(read_jsonl(path), 1):
        try:
            out.append(encode_example(tokenizer, row, max_len, specials))
        except TrainerError:
            raise
        except Exception as e:  # template errors, bad message shapes
            raise TrainerError("invalid_data", f"{path}: example {n}: {e}") from e
    return out


def pack(examples: Iterable[Example], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One padding-free row: examples concatenated, position_ids restarting at 0 for each one
    (transformers builds the block-diagonal causal mask from them when attention_mask is None)."""
    ids, pos, tgt = [], [], []
    for e in examples:
        ids += e.input_ids
        pos += range(e.n_tokens)
        tgt += e.targets
    device = torch.device(device)
    if device.type == "cuda":  # pinned host memory: the copy runs asynchronously with the GPU's work
        as_row = lambda xs: torch.tensor([xs], dtype=torch.long).pin_memory().to(device, non_blocking=True)  # noqa: E731
    else:
        as_row = lambda xs: torch.tensor([xs], dtype=torch.long, device=device)  # noqa: E731
    return {"input_ids": as_row(ids), "position_ids": as_row(pos), "targets": as_row(tgt)}


def micro_batches(examples: list[Example], max_tokens: int) -> list[list[Example]]:
    """Splits one optimizer step's examples, in order, into packs of at most max_tokens tokens
    (an example longer than that is a pack of its own)."""
    packs: list[list[Example]] = [[]]
    size = 0
    for e in examples:
        if packs[-1] and size + e.n_tokens > max_tokens:
            packs.append([])
            size = 0
        packs[-1].append(e)
        size += e.n_tokens
    return [p for p in packs if p]


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch), so a
    resumed run recomputes it."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n_examples, generator=g).tolist()
