"""Training speed: our trainer (`python -m openft_trainer spec.json`, as the worker runs it) beside
TRL's SFTTrainer, plain (batch 4, SFTConfig defaults, no packing) and tuned (packing/padding-free,
no gradient checkpointing, bf16), on SmolLM2-135M-Instruct with LoRA rank 16 and the same chat data.
Ours runs with the spec's default "dtype" (auto: a bf16 frozen base on a CPU with native bf16);
`--engines ours,ours-fp32` adds it with "dtype": "float32" beside it. `--processes N` runs ours on N
training processes (torchrun, gloo, as a worker with OPENFT_TRAIN_PROCESSES=N), each with
threads/N threads; the engine `ours-2proc` runs it on 2 processes beside ours on one, the same
global batch either way, so the collectives' overhead shows (1 x 2 threads vs 2 x 1 thread):

    .venv/bin/python bench/train_speed.py --engines ours,ours-2proc --threads 2 --random-weights --rounds 1
    .venv/bin/python bench/train_speed.py [--examples 48] [--rounds 2] [--random-weights] [--threads 1] [--processes 1]

Every engine runs in its own subprocess (peak RSS is that process's ru_maxrss, from wait4), the
engines interleaved, round after round in a rotated order; the table gives each engine's median
and each round's ratios (engines compared within the same round: the machine is shared).

Definitions (the same for all engines):
* trained tokens: every non-padding token of the examples a training step processed, prompt
  and completion alike (what OpenAI bills, our `done.trained_tokens`); padding is not counted.
* tokens/s: trained tokens / wall time of the training loop (first step start to last step end;
  model loading, tokenization and the final adapter save are outside it).
* loss: mean cross-entropy on the assistant tokens of a held-out set (the same tokens for every
  engine), computed after training by one evaluator in fp32 with each engine's saved adapter.
* MFU: model FLOPs per trained token as in openft_trainer/flops.py (LoRA: 4*N_mat + 6*N_lora +
  12*L*d_attn*T_ctx, T_ctx per document) x tokens/s, divided by this CPU's measured dense matmul
  peak (the best of fp32 and bf16 2048^3 matmuls, measured at the start of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src" / "engine" / "trainer"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from train_data import speed_rows, write_jsonl  # noqa: E402

ENGINES = ["ours", "trl-plain", "trl-tuned"]
OPTIONAL_ENGINES = ["ours-fp32", "ours-2proc"]  # ours with "dtype": "float32"; ours on 2 processes
SMOLLM2 = REPO / "models" / "SmolLM2-135M-Instruct"
LR, RANK, ALPHA, DROPOUT, BATCH, SEED = 2e-4, 16, 32, 0.05, 4, 42
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model folders

def random_weights_dir(work: Path) -> Path:
    """SmolLM2-135M's shape with random weights, and its tokenizer (from the real folder)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = work / "smollm2-random"
    if not (out / "config.json").exists():
        cfg = AutoConfig.from_pretrained(SMOLLM2, local_files_only=True)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
        AutoTokenizer.from_pretrained(SMOLLM2, local_files_only=True).save_pretrained(out)
    return out


# ---------------------------------------------------------------- engines (children)

def run_ours(model_dir: Path, train: str, out: Path, epochs: int, dtype: str | None = None, processes: int = 1,
             threads: int | None = None) -> dict:
    """processes > 1: under torchrun, each process with threads // processes threads (peak RSS is
    then the launcher's own, not its children's)."""
    spec = {"base_model_dir": str(model_dir), "train_file": train, "validation_file": None,
            "output_dir": str(out / "out"), "resume_from": None, "init_adapter": None, "seed": SEED, "device": "cpu",
            "hyperparameters": {"n_epochs": epochs, "batch_size": BATCH, "learning_rate_multiplier": 1.0,
                                "lora_rank": RANK, "lora_alpha": ALPHA, "lora_dropout": DROPOUT, "quantization": "none"}}
    if dtype:
        spec["dtype"] = dtype
    (out / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src" / "engine" / "trainer")}
    cmd = [sys.executable, "-m", "openft_trainer", str(out / "spec.json")]
    if processes > 1:
        cmd[1:2] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m"]
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(max(1, threads // processes))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=open(out / "stderr.log", "w"), env=env, text=True)
    t_start = t_last = None
    tokens, loss, adapter = 0, None, None
    for line in proc.stdout:
        ev, now = json.loads(line), time.perf_counter()
        if ev["type"] == "started":
            t_start = now
        elif ev["type"] == "metrics":
            t_last, tokens, loss = now, ev["tokens"], ev["train_loss"]
        elif ev["type"] == "done":
            adapter = ev["adapter_dir"]
        elif ev["type"] == "error":
            raise SystemExit(f"our trainer failed: {ev}")
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0 or adapter is None:
        raise SystemExit(f"our trainer exited with {status}; see {out / 'stderr.log'}")
    return {"tokens": tokens, "seconds": t_last - t_start, "train_loss": loss, "adapter": adapter,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def trl_child(engine: str, model_dir: Path, train: str, out: Path, epochs: int) -> None:
    """Runs in its own process; writes out/result.json."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in open(train, encoding="utf-8")]
    # prompt/completion form: SFTTrainer's default (completion_only_loss) then trains exactly the
    # assistant turn, as our trainer does
    ds = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    common = dict(output_dir=str(out / "trl"), num_train_epochs=epochs, learning_rate=LR, use_cpu=True,
                  report_to="none", save_strategy="no", logging_steps=1, seed=SEED, disable_tqdm=True)
    if engine == "trl-plain":  # the plain recipe: batch 4, SFTConfig defaults (bf16, gradient checkpointing)
        cfg = SFTConfig(per_device_train_batch_size=BATCH, **common)
        dtype = torch.float32
    else:  # tuned as far as it goes on a CPU
        cfg = SFTConfig(per_device_train_batch_size=1, packing=True, max_length=2048, padding_free=True,
                        gradient_checkpointing=False, bf16=True, **common)
        dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True,
                                                 attn_implementation="sdpa")
    peft_cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS, bias="none",
                          task_type="CAUSAL_LM")

    class Clock(TrainerCallback):
        t0 = t1 = None

        def on_train_begin(self, *a, **k):
            Clock.t0 = time.perf_counter()

        def on_train_end(self, *a, **k):
            Clock.t1 = time.perf_counter()

    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, peft_config=peft_cfg, callbacks=[Clock()])
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"]) * epochs
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    adapter = out / "final"
    trainer.model.save_pretrained(adapter)
    (out / "result.json").write_text(json.dumps({
        "tokens": tokens, "seconds": Clock.t1 - Clock.t0, "train_loss": losses[-1] if losses else None,
        "adapter": str(adapter), "steps": result.global_step}))


def run_trl(engine: str, model_dir: Path, train: str, out: Path, epochs: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, "--model-dir", str(model_dir),
                             "--train", train, "--out", str(out), "--epochs", str(epochs)],
                            stdout=open(out / "stdout.log", "w"), stderr=open(out / "stderr.log", "w"))
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{engine} failed ({status}); see {out / 'stderr.log'}")
    return {**json.loads((out / "result.json").read_text()), "peak_rss_mb": usage.ru_maxrss / 1024}


# ---------------------------------------------------------------- evaluator (child)

def eval_child(model_dir: Path, eval_file: str, adapters: list[str], out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openft_trainer import data
    from openft_trainer.train import forward_stats

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    examples = data.load_examples(eval_file, tok, None)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True,
                                                attn_implementation="sdpa").eval()
    base.config.use_cache = False

    def loss_of(model) -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for e in examples:  # one example per forward: no packing subtleties in the evaluator
                s, k, _ = forward_stats(model, [e], "cpu")
                total, n = total + float(s), n + k
        return total / n

    res = {"base": loss_of(base)}
    for a in adapters:
        m = PeftModel.from_pretrained(base, a).eval()
        res[a] = loss_of(m)
        base = m.unload()
    (out / "eval.json").write_text(json.dumps(res))


# ---------------------------------------------------------------- parent

def matmul_peak() -> tuple[float, str]:
    import torch

    best = (0.0, "")
    n = 2048
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(3):
            t = time.perf_counter()
            a @ b
            rate = 2 * n**3 / (time.perf_counter() - t)
            if rate > best[0]:
                best = (rate, str(dtype).replace("torch.", ""))
    return best


def model_flops_per_token(model_dir: Path, doc_lens: list[int]) -> float:
    from transformers import AutoConfig

    from openft_trainer import flops

    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    L, d, inter, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    n_mat = L * (d * q + 2 * d * kv + q * d + 3 * d * inter) + d * V
    n_lora = L * RANK * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + inter) + (inter + d))
    return flops.flops_per_token(n_mat, n_lora, L, q, flops.causal_context(doc_lens)), n_mat, n_lora


def versions() -> str:
    import platform

    names = ["torch", "transformers", "peft", "trl", "accelerate", "datasets"]
    return "python " + platform.python_version() + ", " + ", ".join(f"{n} {metadata.version(n)}" for n in names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help=f"comma-separated, from {', '.join(ENGINES + OPTIONAL_ENGINES)}")
    ap.add_argument("--random-weights", action="store_true", help="random weights of SmolLM2-135M's shape")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for every engine (default: torch's own choice, one per core)")
    ap.add_argument("--processes", type=int, default=1, help="training processes for ours (torchrun)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--model-dir")
    ap.add_argument("--train")
    ap.add_argument("--out")
    ap.add_argument("--eval-file")
    ap.add_argument("--adapters", nargs="*")
    args = ap.parse_args()
    if args.child == "eval":
        return eval_child(Path(args.model_dir), args.eval_file, args.adapters, Path(args.out))
    if args.child:
        return trl_child(args.child, Path(args.model_dir), args.train, Path(args.out), args.epochs)

    if args.threads:  # inherited by every engine's process
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if not (SMOLLM2 / "config.json").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "fetch-smollm2.sh")], check=True, stdout=sys.stderr)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="openft-train-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = random_weights_dir(work) if args.random_weights else SMOLLM2
    train = write_jsonl(work / "train.jsonl", speed_rows(args.examples, seed=1))
    eval_file = write_jsonl(work / "eval.jsonl", speed_rows(12, seed=2))

    from transformers import AutoTokenizer

    from openft_trainer import data

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    encoded = data.load_examples(train, tok, None)
    lens = [e.n_tokens for e in encoded]
    fpt, n_mat, n_lora = model_flops_per_token(model_dir, lens)
    peak, peak_dtype = matmul_peak()
    log(f"data: {len(lens)} examples, {sum(lens)} tokens (min {min(lens)}, mean {sum(lens) / len(lens):.0f}, "
        f"max {max(lens)}), {sum(e.n_trained for e in encoded)} assistant tokens; "
        f"model FLOPs/token {fpt / 1e6:.0f} M; CPU matmul peak {peak / 1e9:.0f} GFLOP/s ({peak_dtype})")

    engines = args.engines.split(",")
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for e in order:
            out = work / f"round{r + 1}-{e}"
            out.mkdir(parents=True, exist_ok=True)
            log(f"round {r + 1}: {e} ...")
            if e in ("ours", "ours-fp32", "ours-2proc"):
                procs = 2 if e == "ours-2proc" else args.processes
                res = run_ours(model_dir, train, out, args.epochs, "float32" if e == "ours-fp32" else None,
                               procs, args.threads or os.cpu_count())
            else:
                res = run_trl(e, model_dir, train, out, args.epochs)
            res["tok_s"] = res["tokens"] / res["seconds"]
            log(f"  {res['tokens']} tokens in {res['seconds']:.1f} s = {res['tok_s']:.1f} tokens/s, "
                f"peak RSS {res['peak_rss_mb']:.0f} MB, last train loss {res['train_loss']:.4f}")
            results[e].append(res)

    log("evaluating the adapters on the held-out set ...")
    adapters = [res["adapter"] for e in engines for res in results[e]]
    subprocess.run([sys.executable, __file__, "--child", "eval", "--model-dir", str(model_dir), "--eval-file",
                    eval_file, "--out", str(work), "--adapters", *adapters], check=True,
                   stdout=sys.stderr, stderr=open(work / "eval.log", "w"))
    losses = json.loads((work / "eval.json").read_text())

    print(f"\nTraining speed, SmolLM2-135M-Instruct ({'random' if args.random_weights else 'real'} weights), "
          f"LoRA r={RANK} on {', '.join(TARGETS)}, CPU ({os.cpu_count()} cores), {args.epochs} epoch(s) of "
          f"{len(lens)} chats ({sum(lens)} tokens, {min(lens)}-{max(lens)} each), lr {LR}, "
          f"threads per engine: {args.threads or 'torch default'}, processes for ours: {args.processes} "
          f"(ours-2proc: 2 x {max(1, (args.threads or os.cpu_count()) // 2)} threads)")
    print(f"peers: {versions()}")
    print(f"model FLOPs/trained token {fpt / 1e6:.0f} M (N_mat {n_mat / 1e6:.1f} M, N_lora {n_lora / 1e6:.2f} M); "
          f"MFU against this CPU's measured matmul peak {peak / 1e9:.0f} GFLOP/s ({peak_dtype})")
    print(f"held-out loss before training (base model): {losses['base']:.4f}\n")
    hdr = f"{'engine':<10} {'tokens/s (median)':>18} {'per round':>22} {'MFU':>7} {'peak RSS MB':>12} " \
          f"{'held-out loss':>14} {'last train loss':>16} {'trained tokens':>15}"
    print(hdr)
    print("-" * len(hdr))
    med = {}
    for e in engines:
        rs = results[e]
        med[e] = statistics.median(x["tok_s"] for x in rs)
        per = " ".join(f"{x['tok_s']:.1f}" for x in rs)
        ev = " ".join(f"{losses[x['adapter']]:.4f}" for x in rs)
        tl = " ".join(f"{x['train_loss']:.3f}" for x in rs)
        print(f"{e:<10} {med[e]:>18.1f} {per:>22} {med[e] * fpt / peak:>7.1%} "
              f"{max(x['peak_rss_mb'] for x in rs):>12.0f} {ev:>14} "
              f"{tl:>16} {rs[0]['tokens']:>15}")
    if "ours" in engines:
        print()
        for peer, goal in (("trl-plain", 2.5), ("trl-tuned", 1.25), ("ours-fp32", None), ("ours-2proc", None)):
            if peer not in engines:
                continue
            per_round = [o["tok_s"] / p["tok_s"] for o, p in zip(results["ours"], results[peer])]
            ratio = statistics.median(per_round)
            print(f"ours / {peer}: {ratio:.2f}x (per round: {', '.join(f'{x:.2f}' for x in per_round)})"
                  + (f"; goal >= {goal}x: {'met' if ratio >= goal else 'NOT met'}" if goal else ""))
    print(f"\nwork dir: {work}")


if __name__ == "__main__":
    main()
