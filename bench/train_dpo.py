"""DPO quality: SmolLM2-135M-Instruct before and after a DPO job on a preference set the bench makes
itself, scored on held-out prompts; plus general questions (train_quality.py's four and twenty more).

    .venv/bin/python bench/train_dpo.py [--epochs 3] [--batch-size 8] [--lr-multiplier 0.5]
                                        [--beta 0.1] [--rpo-alpha 0] [--rehearsal 0]

--rpo-alpha: the job's rpo_alpha (our extension: the preferred output's mean token NLL added to
DPO's loss); --rehearsal N: N more training pairs made the same way on train_quality.py's everyday
questions (none of them a scored general question).

The preferred style, which the base model does not use: exactly one sentence ending with the word
"friend" ("The capital of Japan is Tokyo, friend."). Pairs: the base model answers each prompt
greedily (usually several sentences); that answer is the non-preferred output, and its first
sentence rewritten to end in ", friend." is the preferred one, so both say the same thing and only
the style differs. Prompts come from templates over topics; held-out prompts use topics never
trained on.

Scores, before and after:
  - preference accuracy: held-out pairs whose preferred output gets the higher mean per-token
    log-probability (length-normalised, so the shorter preferred output wins nothing by length);
  - style share: greedy replies to the held-out prompts that are one sentence ending in "friend."
    (or "friend!");
  - general questions: train_quality.GENERAL and KNOWLEDGE, twenty more everyday facts never
    trained on; greedy replies scored by train_quality.mentions (answers may change style, not
    facts). Four questions alone hang on a single reply: the base's
    sky answer ("often described as a deep, rich shade of blue") turned in every DPO run.
After training it also prints the DPO reward accuracy on the held-out pairs (implicit reward
against the base, as the job's valid_reward_accuracy).

The job runs as the worker runs it: the spec trainer-runner.ts writes (method "dpo", the API's
auto values by default: lr multiplier 0.5, beta 0.1), then `python -m openft_trainer spec.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_quality import GENERAL, LORA_DEFAULTS, REHEARSAL, REPO, SMOLLM2, generate, mentions, run_trainer

TRAIN_TOPICS = ["the Moon", "volcanoes", "honey bees", "the Nile river", "rainbows", "chess", "the piano",
                "penguins", "coffee", "the Eiffel Tower", "tides", "bamboo", "thunder", "the heart",
                "glaciers", "owls"]
HELDOUT_TOPICS = ["deserts", "the violin", "dolphins", "tea", "lightning", "the Great Wall of China",
                  "mushrooms", "comets"]
TEMPLATES = ["What is special about {t}?", "Tell me one fact about {t}.", "Why are people interested in {t}?"]
ENDING = re.compile(r",? friend[.!]$")
# Everyday facts for the general score beside train_quality.GENERAL, fixed before any run scored
# them (one swap since: "What is frozen water called?" scored "ice" in "formed when ice melts"):
# none is a REHEARSAL question or about a training topic (asserted in main).
KNOWLEDGE = [("What is the capital of Italy?", ["rome"]), ("What is the capital of Germany?", ["berlin"]),
             ("What is the capital of Spain?", ["madrid"]), ("How many months are there in a year?", ["twelve", "12"]),
             ("What is the capital of Egypt?", ["cairo"]), ("What is the largest mammal on Earth?", ["whale"]),
             ("Who painted the Mona Lisa?", ["leonardo", "vinci"]), ("What is the closest star to Earth?", ["sun"]),
             ("Which planet do we live on?", ["earth"]), ("What color is grass?", ["green"]),
             ("Who was the first president of the United States?", ["washington"]),
             ("What animal is known as the king of the jungle?", ["lion"]), ("How many legs does a dog have?", ["four", "4"]),
             ("What do you call a baby dog?", ["pupp"]), ("What is the opposite of 'up'?", ["down"]),
             ("What is 2 plus 2?", ["four", "4"]), ("Which season comes after winter?", ["spring"]),
             ("What is the currency of the United States?", ["dollar"]),
             ("Which fruit is said to keep the doctor away?", ["apple"]),
             ("What language is mainly spoken in Mexico?", ["spanish"])]


def prompts(topics: list[str]) -> list[str]:
    return [t.format(t=topic) for topic in topics for t in TEMPLATES]


def first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.!?])(\s|$)", text.strip(), re.S)
    return (m.group(1) if m else text.strip()).replace("\n", " ")


def preferred(answer: str) -> str:
    return re.sub(r"[.!?]+$", "", first_sentence(answer)).rstrip() + ", friend."


def in_style(reply: str) -> bool:
    reply = reply.strip()
    return bool(ENDING.search(reply)) and not re.search(r"[.!?]\s", reply)


def make_pairs(model, tok, qs: list[str]) -> list[dict]:
    answers = generate(model, tok, [[{"role": "user", "content": q}] for q in qs], max_new_tokens=64)
    return [{"input": {"messages": [{"role": "user", "content": q}]},
             "preferred_output": [{"role": "assistant", "content": preferred(a)}],
             "non_preferred_output": [{"role": "assistant", "content": a}]}
            for q, a in zip(qs, answers) if a and preferred(a) != a]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def preference_scores(model, tok, pairs_file: str, reference=None):
    """(share of pairs whose preferred output has the higher mean token log-prob, DPO reward
    accuracy against `reference` log-probs when given)."""
    import torch
    from openft_trainer import dpo

    pairs = dpo.load_pairs(pairs_file, tok, None)
    with torch.no_grad():
        logps = torch.stack([dpo.sequence_logps(model, [p.chosen, p.rejected], "cpu") for p in pairs])
    lengths = torch.tensor([[p.chosen.n_trained, p.rejected.n_trained] for p in pairs], dtype=torch.float32)
    mean = logps / lengths
    accuracy = float((mean[:, 0] > mean[:, 1]).float().mean())
    reward = None if reference is None else float(((logps - reference)[:, 0] > (logps - reference)[:, 1]).float().mean())
    return accuracy, reward, logps


def score(model, tok, heldout_qs: list[str], pairs_file: str, label: str, reference=None) -> dict:
    t = time.perf_counter()
    accuracy, reward, logps = preference_scores(model, tok, pairs_file, reference)
    replies = generate(model, tok, [[{"role": "user", "content": q}] for q in heldout_qs], max_new_tokens=64)
    # One pass over both sets (batches of 4: the same batches as two passes, so the same replies).
    replies_all = generate(model, tok, [[{"role": "user", "content": q}] for q, _ in GENERAL + KNOWLEDGE], max_new_tokens=48, batch=4)
    general, knowledge = replies_all[:len(GENERAL)], replies_all[len(GENERAL):]
    print(f"  scored {label} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return {"accuracy": accuracy, "reward_accuracy": reward, "logps": logps, "replies": replies,
            "style": sum(map(in_style, replies)), "general": general,
            "general_ok": [mentions(g, keys) for g, (_, keys) in zip(general, GENERAL)],
            "knowledge": knowledge, "knowledge_ok": [mentions(g, keys) for g, (_, keys) in zip(knowledge, KNOWLEDGE)]}


def run_job(work: Path, train_file: str, valid_file: str, args) -> tuple[dict, list[dict], float]:
    spec = {"base_model_dir": str(SMOLLM2), "train_file": train_file, "validation_file": valid_file,
            "output_dir": str(work / "out"), "resume_from": None, "init_adapter": None, "method": "dpo",
            "hyperparameters": {"n_epochs": args.epochs, "batch_size": args.batch_size,
                                "learning_rate_multiplier": args.lr_multiplier, "beta": args.beta,
                                "rpo_alpha": args.rpo_alpha, **LORA_DEFAULTS},
            "seed": 42, "device": "auto"}
    done, events, seconds = run_trainer(work, spec)
    return done, [e for e in events if e["type"] == "metrics"], seconds


def report(args, n_train: int, heldout_qs: list[str], before: dict, after: dict, metrics: list[dict], seconds: float):
    last = metrics[-1]
    print(f"\nDPO quality: SmolLM2-135M-Instruct (real weights), `python -m openft_trainer` method dpo "
          f"({n_train} train pairs, {args.epochs} epochs, batch {args.batch_size}, lr multiplier {args.lr_multiplier}, "
          f"beta {args.beta}, rpo_alpha {args.rpo_alpha}; {len(metrics)} steps, train loss {metrics[0]['train_loss']:.3f} -> {last['train_loss']:.3f}, "
          f"valid reward accuracy {last.get('valid_reward_accuracy', float('nan')):.2f}; job {seconds:.0f} s on "
          f"{os.cpu_count()} CPU cores)")
    print("style: one sentence ending in 'friend.'; held-out: "
          f"{len(heldout_qs)} prompts on {len(HELDOUT_TOPICS)} unseen topics\n")
    print(f"{'model':<8} {'preference acc.':>16} {'style share':>12} {'general':>8} {'knowledge':>10}")
    print("-" * 59)
    for label, r in (("base", before), ("DPO", after)):
        print(f"{label:<8} {r['accuracy']:>16.0%} {r['style']:>6}/{len(heldout_qs)} {sum(r['general_ok']):>6}/{len(GENERAL)}"
              f" {sum(r['knowledge_ok']):>7}/{len(KNOWLEDGE)}")
    print(f"DPO reward accuracy on the held-out pairs (vs the base): {after['reward_accuracy']:.0%}")
    print("\nheld-out replies (base -> DPO):")
    for q, b, a in list(zip(heldout_qs, before["replies"], after["replies"]))[:4]:
        print(f"  {q}\n    base: {b[:110]!r}\n    DPO:  {a[:110]!r}")
    print("\ngeneral questions (base -> DPO):")
    for (q, _), b, a in zip(GENERAL, before["general"], after["general"]):
        print(f"  {q}\n    base: {b[:100]!r}\n    DPO:  {a[:100]!r}")
    print("\nknowledge questions whose score changed (base -> DPO):")
    for (q, _), b, a, ok_b, ok_a in zip(KNOWLEDGE, before["knowledge"], after["knowledge"], before["knowledge_ok"], after["knowledge_ok"]):
        if ok_b != ok_a:
            print(f"  {q} ({'kept' if ok_b else 'missed'} -> {'kept' if ok_a else 'missed'})\n    base: {b[:100]!r}\n    DPO:  {a[:100]!r}")
    moved = after["accuracy"] >= before["accuracy"] + 0.3 and after["style"] >= before["style"] + len(heldout_qs) // 3
    kept = sum(after["general_ok"] + after["knowledge_ok"]) >= sum(before["general_ok"] + before["knowledge_ok"])
    print(f"\ngoal (preference clearly moved, general answers kept: general + knowledge not below the base's): "
          f"{'met' if moved and kept else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-multiplier", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--rpo-alpha", type=float, default=0.0)
    ap.add_argument("--rehearsal", type=int, default=0,
                    help="add pairs in the same style for this many of train_quality.py's everyday questions")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if not (SMOLLM2 / "config.json").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "fetch-smollm2.sh")], check=True, stdout=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="openft-train-dpo-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "src" / "engine" / "trainer"))
    knowledge_qs = {q for q, _ in KNOWLEDGE}
    assert not knowledge_qs & (set(REHEARSAL) | {q for q, _ in GENERAL}), "a knowledge question is asked elsewhere"
    assert not any(t.lower().removeprefix("the ") in q.lower() for q in knowledge_qs for t in TRAIN_TOPICS + HELDOUT_TOPICS)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SMOLLM2, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32, local_files_only=True).eval()
    t0 = time.perf_counter()
    train_pairs, heldout_qs = make_pairs(base, tok, prompts(TRAIN_TOPICS)), prompts(HELDOUT_TOPICS)
    n_style = len(train_pairs)
    train_pairs += make_pairs(base, tok, REHEARSAL[:args.rehearsal])
    heldout_pairs = make_pairs(base, tok, heldout_qs)
    print(f"pairs: {len(train_pairs)} train ({len(train_pairs) - n_style} on everyday questions), {len(heldout_pairs)} held-out, answered by the base in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    train_file = write_jsonl(work / "train.jsonl", train_pairs)
    valid_file = write_jsonl(work / "heldout.jsonl", heldout_pairs)
    before = score(base, tok, heldout_qs, valid_file, "the base model")
    print(f"training: {len(train_pairs)} pairs ...", file=sys.stderr)
    done, metrics, seconds = run_job(work, train_file, valid_file, args)
    tuned = PeftModel.from_pretrained(base, done["adapter_dir"]).eval()
    after = score(tuned, tok, heldout_qs, valid_file, "the DPO model", reference=before["logps"])
    report(args, len(train_pairs), heldout_qs, before, after, metrics, seconds)
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
