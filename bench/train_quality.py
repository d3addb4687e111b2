"""Training quality: SmolLM2-135M-Instruct before and after a fine-tuning job on a task the bench
makes itself, scored on held-out items; plus a few fixed general questions before and after.

    .venv/bin/python bench/train_quality.py [--train 160] [--heldout 40] [--epochs 2] [--rehearsal 32]

The task: a strict answer format whose content comes from the prompt. The user gives an order
note in free text ("Maria Lopez bought 3 lamps on May 17."); the answer must be exactly one JSON
line in a fixed field order, with the name reordered:
    {"customer": "Lopez, Maria", "item": "lamps", "quantity": 3, "date": "May 17"}
Held-out notes use different name, item, quantity and date combinations (and sentence shapes
seen in training). Score: exact match of the whole answer (whitespace-trimmed).

Forgetting: fine-tuning on one narrow format alone made the model answer an unrelated question
("How many days are there in a week?") in the order JSON. The bench uses the standard remedy,
rehearsal: the training file also holds general chats (REHEARSAL, a lone user message each, as the
general questions are asked) answered by the base model itself, greedily, at bench time; answers
that do not end within 160 tokens are dropped. The four scored GENERAL questions are never among
them (asserted). `--rehearsal 0` trains on the task alone.

The job runs as the worker runs it: a spec.json like src/engine/worker/trainer-runner.ts writes,
then `python -m openft_trainer spec.json`. Scoring uses transformers' greedy generation, the
adapter loaded with peft (PeftModel.from_pretrained on the base model).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYSTEM = "You are the order desk. Log each order note."
FIRST = ["Maria", "John", "Aisha", "Peter", "Lena", "Omar", "Sofia", "David", "Yuki", "Carlos", "Emma", "Ivan",
         "Grace", "Tom", "Nina", "Ahmed", "Chloe", "Lucas", "Mei", "Oscar", "Hannah", "Raj", "Zoe", "Felix"]
LAST = ["Lopez", "Smith", "Khan", "Novak", "Berg", "Haddad", "Rossi", "Miller", "Tanaka", "Silva", "Dubois",
        "Petrov", "Kim", "Walsh", "Jensen", "Ali", "Martin", "Costa", "Chen", "Nilsen", "Weber", "Patel",
        "Young", "Moreau"]
ITEMS = ["lamps", "chairs", "notebooks", "kettles", "bicycles", "pillows", "umbrellas", "mugs", "candles",
         "backpacks", "blankets", "clocks", "towels", "helmets", "baskets", "mirrors", "scarves", "jars"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
SHAPES = ["{f} {l} bought {q} {i} on {d}.", "On {d}, {f} {l} ordered {q} {i}.", "{q} {i} for {f} {l}, placed {d}.",
          "New order from {f} {l}: {q} {i}, dated {d}."]
GENERAL = [("What is the capital of France?", ["paris"]),
           ("How many days are there in a week?", ["seven", "7"]),
           ("What color is the sky on a clear day?", ["blue"]),
           ("Which animal says 'moo'?", ["cow"])]
# Rehearsal prompts: everyday questions and requests, none of them a GENERAL question (checked in
# rehearsal_rows); the base model answers them itself at bench time.
REHEARSAL = ["What is the largest planet in our solar system?", "How many legs does a spider have?",
             "What do bees make?", "What is the boiling point of water in Celsius?",
             "Who wrote 'Romeo and Juliet'?", "What is the opposite of 'hot'?", "Name three primary colors.",
             "What gas do plants take in from the air?", "How many hours are there in a day?",
             "What is the tallest animal in the world?", "What is 12 plus 15?", "Give me a synonym for 'happy'.",
             "What is the freezing point of water in Fahrenheit?", "Which ocean is the largest?",
             "What language is mainly spoken in Brazil?", "What is the chemical symbol for gold?",
             "How many continents are there?", "What do you call a baby cat?", "What is the square root of 81?",
             "Which planet is known as the Red Planet?", "Write one sentence about autumn.",
             "What is the main ingredient of guacamole?", "What instrument has 88 keys?",
             "How many minutes are in an hour?", "What is the capital of Japan?", "Translate 'thank you' into Spanish.",
             "What shape has three sides?", "Why do we need sleep?", "What is photosynthesis, in one sentence?",
             "Suggest a name for a pet goldfish.", "What is the currency of the United Kingdom?",
             "How many sides does a hexagon have?"]


def item(rng: random.Random) -> tuple[str, str]:
    f, l, i = rng.choice(FIRST), rng.choice(LAST), rng.choice(ITEMS)
    q, d = rng.randint(2, 40), f"{rng.choice(MONTHS)} {rng.randint(1, 28)}"
    note = rng.choice(SHAPES).format(f=f, l=l, q=q, i=i, d=d)
    answer = json.dumps({"customer": f"{l}, {f}", "item": i, "quantity": q, "date": d})
    return note, answer


def make_sets(n_train: int, n_heldout: int, seed: int = 7):
    rng = random.Random(seed)
    seen, train, heldout = set(), [], []
    while len(train) + len(heldout) < n_train + n_heldout:
        note, answer = item(rng)
        if answer in seen:
            continue
        seen.add(answer)
        (train if len(train) < n_train else heldout).append((note, answer))
    return train, heldout


def chat(note: str, answer: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": note}]
    return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def generate(model, tok, conversations: list[list[dict]], max_new_tokens: int, batch: int = 16,
             finished: list[bool] | None = None) -> list[str]:
    """Greedy answers; `finished` (if given) gets whether each answer ended with end-of-turn."""
    import torch

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    outs = []
    for k in range(0, len(conversations), batch):
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations[k:k + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new_tokens = [g[enc["input_ids"].shape[1]:] for g in gen]
        outs += [tok.decode(g, skip_special_tokens=True).strip() for g in new_tokens]
        if finished is not None:
            finished += [bool((g == tok.eos_token_id).any()) for g in new_tokens]
    return outs


def rehearsal_rows(model, tok, n: int) -> list[dict]:
    """The standard remedy for forgetting: general chats answered by the base model itself (greedy,
    the scoring's format: a lone user message), mixed into the training file. Answers that do not
    end within 160 tokens are left out (training on a cut-off answer would teach cutting off)."""
    prompts = REHEARSAL[:n]
    scored = {q for q, _ in GENERAL}
    assert not scored & set(prompts), "a scored general question must never be trained on"
    done: list[bool] = []
    answers = generate(model, tok, [[{"role": "user", "content": q}] for q in prompts], max_new_tokens=160,
                       batch=8, finished=done)
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a, ok in zip(prompts, answers, done) if ok and a]


# What the API resolves a job's "auto" LoRA settings to (LORA_DEFAULTS in
# src/jobs/validation/validate-file.ts): the trainer takes numbers only.
LORA_DEFAULTS = {"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "quantization": "none"}


def run_trainer(work: Path, spec: dict) -> tuple[dict, list[dict], float]:
    """`python -m openft_trainer spec.json` as the worker runs it: the done event, every event and
    the seconds it took; exits the bench when the trainer fails (its stderr kept in `work`)."""
    (work / "spec.json").write_text(json.dumps(spec, indent=2))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "openft_trainer", str(work / "spec.json")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src" / "engine" / "trainer")})
    (work / "trainer.stderr.log").write_text(proc.stderr)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    done = next((e for e in events if e["type"] == "done"), None)
    if proc.returncode != 0 or done is None:
        raise SystemExit(f"the trainer failed (exit {proc.returncode}): {events[-1:]}; see {work}/trainer.stderr.log")
    return done, events, time.perf_counter() - t0


def mentions(reply: str, keys: list[str]) -> bool:
    """Whether a general answer names its fact: a keyword at the start of a word ("7-day" counts,
    "paris" inside "comparison" does not)."""
    return any(re.search(rf"\b{re.escape(k)}", reply.lower()) for k in keys)


def score(model, tok, heldout, label: str) -> dict:
    t = time.perf_counter()
    answers = generate(model, tok, [chat(n) for n, _ in heldout], max_new_tokens=48)
    exact = sum(a == want for a, (_, want) in zip(answers, heldout))
    general = generate(model, tok, [[{"role": "user", "content": q}] for q, _ in GENERAL], max_new_tokens=40, batch=4)
    ok = [mentions(g, keys) for g, (_, keys) in zip(general, GENERAL)]
    print(f"  scored {label} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return {"exact": exact, "n": len(heldout), "answers": answers, "general": general, "general_ok": ok}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr-multiplier", type=float, default=2.0)
    ap.add_argument("--rehearsal", type=int, default=len(REHEARSAL),
                    help=f"general chats answered by the base model mixed into the training file (0-{len(REHEARSAL)})")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the job and the scoring")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if not (SMOLLM2 / "config.json").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "fetch-smollm2.sh")], check=True, stdout=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="openft-train-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    train, heldout = make_sets(args.train, args.heldout)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(SMOLLM2, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32, local_files_only=True).eval()
    t0 = time.perf_counter()
    rehearsal = rehearsal_rows(base, tok, args.rehearsal) if args.rehearsal else []
    print(f"rehearsal: {len(rehearsal)} of {min(args.rehearsal, len(REHEARSAL))} general chats answered by the "
          f"base model in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    with open(work / "train.jsonl", "w") as f:
        for note, answer in train:
            f.write(json.dumps({"messages": chat(note, answer)}) + "\n")
        for row in rehearsal:
            f.write(json.dumps(row) + "\n")

    # the spec the worker writes (trainer-runner.ts), for a job with these hyperparameters
    spec = {"base_model_dir": str(SMOLLM2), "train_file": str(work / "train.jsonl"), "validation_file": None,
            "output_dir": str(work / "out"), "resume_from": None, "init_adapter": None,
            "hyperparameters": {"n_epochs": args.epochs, "batch_size": args.batch_size,
                                "learning_rate_multiplier": args.lr_multiplier, **LORA_DEFAULTS},
            "seed": 42, "device": "auto"}
    print(f"training: {len(train)} task + {len(rehearsal)} rehearsal examples, {args.epochs} epochs, "
          f"batch {args.batch_size} ...", file=sys.stderr)
    done, events, train_s = run_trainer(work, spec)
    losses = [e["train_loss"] for e in events if e["type"] == "metrics"]

    before = score(base, tok, heldout, "the base model")
    tuned = PeftModel.from_pretrained(base, done["adapter_dir"]).eval()
    after = score(tuned, tok, heldout, "the fine-tuned model")

    print(f"\nTraining quality: SmolLM2-135M-Instruct (real weights), LoRA via `python -m openft_trainer` "
          f"({len(train)} task + {len(rehearsal)} rehearsal train examples, {args.epochs} epochs, batch {args.batch_size}, "
          f"lr multiplier {args.lr_multiplier}; {len(losses)} steps, {done['trained_tokens']} trained tokens, "
          f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}, job {train_s:.0f} s on {os.cpu_count()} CPU cores, "
          f"threads {args.threads or 'torch default'})")
    names = ["torch", "transformers", "peft", "tokenizers"]
    print("peers: " + ", ".join(f"{n} {metadata.version(n)}" for n in names) + " (greedy generate, peft adapter)")
    print(f"task: order note -> one exact JSON line; {len(heldout)} held-out notes, exact match\n")
    print(f"{'model':<12} {'held-out exact':>15} {'general questions':>18}")
    print("-" * 47)
    for label, r in (("base", before), ("fine-tuned", after)):
        print(f"{label:<12} {r['exact']:>3}/{r['n']} {r['exact'] / r['n']:>8.0%} {sum(r['general_ok']):>12}/{len(GENERAL)}")
    print("\nexamples (held-out):")
    for k in range(3):
        print(f"  note:       {heldout[k][0]}\n  want:       {heldout[k][1]}\n  base:       {before['answers'][k][:110]!r}\n"
              f"  fine-tuned: {after['answers'][k]!r}")
    print("\ngeneral questions (base -> fine-tuned):")
    for (q, _), b, a in zip(GENERAL, before["general"], after["general"]):
        print(f"  {q}\n    base:       {b[:120]!r}\n    fine-tuned: {a[:120]!r}")
    goal = after["exact"] / after["n"] >= 0.9 and before["exact"] / before["n"] <= 0.1 and \
        sum(after["general_ok"]) >= sum(before["general_ok"])
    print(f"\ngoal (fine-tuned >= 90%, base ~0%, general answers kept): {'met' if goal else 'NOT met'}")
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
