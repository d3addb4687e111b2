"""Deterministic chat data for the training benches (no downloads).

speed_rows(): realistic, varied-length single-turn chats (about 150-700 tokens with SmolLM2's
tokenizer): a system prompt, a user message carrying a block of notes, an assistant reply that
restates them. Content is generated from fixed word lists with a seeded RNG.
"""

from __future__ import annotations

import json
import random

SUBJECTS = ["The warehouse team", "Our billing service", "The north office", "The mobile app", "Customer support",
            "The data pipeline", "The finance group", "The design review", "The release train", "The search index",
            "The onboarding flow", "The night shift", "The vendor contract", "The test cluster", "The sales region"]
VERBS = ["reported", "finished", "postponed", "reviewed", "reduced", "doubled", "migrated", "flagged", "approved",
         "rewrote", "measured", "cancelled", "scheduled", "audited", "shipped"]
OBJECTS = ["the quarterly budget", "three open incidents", "the latency dashboard", "the holiday rota",
           "a new pricing page", "the backup policy", "twelve stale tickets", "the invoice template",
           "the access review", "the capacity plan", "two failing checks", "the supplier list",
           "the training material", "the cache settings", "the roadmap draft"]
TAILS = ["before Friday", "after the outage", "with no further changes", "ahead of the audit", "for the second time",
         "on short notice", "as planned", "despite the delay", "in the shared folder", "without approval",
         "after a long discussion", "for the new region", "at the weekly sync", "under the old rules", "by noon"]
SYSTEMS = ["You are a concise assistant that turns notes into clear summaries.",
           "You are an operations assistant. Answer with a short structured summary.",
           "You help managers read status notes quickly."]


def sentence(rng: random.Random) -> tuple[str, str]:
    s, v, o, t = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)
    return f"{s} {v} {o} {t}.", f"{s.removeprefix('The ').removeprefix('Our ')}: {v} {o}"


def speed_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(4, 28)  # varied lengths: ~150 to ~700 tokens
        pairs = [sentence(rng) for _ in range(k)]
        notes = " ".join(p[0] for p in pairs)
        bullets = "\n".join(f"- {p[1]}" for p in pairs)
        rows.append({"messages": [
            {"role": "system", "content": rng.choice(SYSTEMS)},
            {"role": "user", "content": f"Here are today's notes (batch {i}):\n{notes}\n\nSummarise them as a bulleted list, one line per note."},
            {"role": "assistant", "content": f"Summary of {k} notes:\n{bullets}"}]})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)
