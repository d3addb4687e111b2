"""GPU training throughput: an 8B-class Llama shape (random weights; Llama-3-8B's config: hidden
4096, 32 layers, 32/8 heads, intermediate 14336, vocab 128256) trained with LoRA (bf16 base) and
QLoRA (bitsandbytes NF4) through our trainer's own code path: model.load_base (from a saved folder,
as a job loads its base model), model.add_lora, train.forward_stats (packed padding-free rows,
per-document attention, lm_head only on trained positions), AdamW + clipping as in train.py.

    .venv/bin/python bench/gpu_train.py            # on a machine with a CUDA GPU (H200: < 10 min)
    .venv/bin/python bench/gpu_train.py --tiny     # a tiny Llama of the same layout, any device (CPU here)
    .venv/bin/python bench/gpu_train.py --modes none --gpus 1,2,4,8   # one job on 1..N GPUs

Each process count runs under torchrun (NCCL; gloo on a CPU) with the trainer's data-parallel
path (train.rank_packs shares each step's documents out, dist.reduce_gradients sums the LoRA
gradients), `--docs` documents per process per step (weak scaling: the global batch grows with
the GPUs). Scaling efficiency = tokens/s on N GPUs / (N x tokens/s on 1).

Reports tokens/s (every token of the packed rows is a trained token: prompt-and-completion, as the
speed bench defines it), MFU (openft_trainer/flops.py's model FLOPs; against 788 TFLOP/s, the measured
bf16 dense matmul ceiling of an H200, and the 989 TFLOP/s datasheet figure) and peak GPU memory.
The device it ran on is printed in the table; a CPU run proves the code path, not GPU numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src" / "engine" / "trainer"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from openft_trainer import data, flops, model as model_lib  # noqa: E402
from openft_trainer.dist import Dist  # noqa: E402
from openft_trainer.train import MAX_GRAD_NORM, forward_stats, rank_packs  # noqa: E402

PEAK_MEASURED, PEAK_DATASHEET = 788e12, 989e12
LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, head_dim=128, max_position_embeddings=8192,
                 rope_parameters={"rope_theta": 500000.0, "rope_type": "default"}, tie_word_embeddings=False)
TINY = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=512, vocab_size=4096, head_dim=64, max_position_embeddings=2048,
            rope_parameters={"rope_theta": 10000.0, "rope_type": "default"}, tie_word_embeddings=False)


def save_random_model(shape: dict, out: Path, device: torch.device) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: 8B random weights on the CPU take minutes
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def make_batch(n_docs: int, doc_len: int, vocab: int, seed: int) -> list[data.Example]:
    """Packed documents of a chat-like shape: the first third of each is prompt (not trained)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(doc_len // 2, doc_len)
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        cut = n // 3
        docs.append(data.Example(ids, [data.IGNORE] * cut + ids[cut + 1:] + [data.IGNORE]))
    return docs


def run(model_dir: Path, device: torch.device, quantization: str, args, dist: Dist | None = None) -> dict:
    dist = dist or Dist()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    base = model_lib.load_base(str(model_dir), device, quantization)
    torch.manual_seed(0)
    model = model_lib.add_lora(base, args.rank, 2 * args.rank, 0.05)
    model.train()
    load_s = time.perf_counter() - t
    params = model_lib.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=device.type == "cuda")
    meter = flops.FlopMeter(model, device)
    vocab = model.config.vocab_size
    times, tokens, step_flops, losses = [], 0, 0.0, []
    for step in range(args.warmup + args.steps):
        batch = make_batch(args.docs * dist.world, args.doc_len, vocab, seed=step)
        n_trained = sum(e.n_trained for e in batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss_sum = 0.0
        for pack in rank_packs(batch, args.max_batch_tokens, dist)[0]:  # as Run.train_step
            s, _, _ = forward_stats(model, pack, device)
            (s / n_trained).backward()
            loss_sum += float(s.detach())
        dist.reduce_gradients(params)
        loss_sum = dist.sum([loss_sum])[0]
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        losses.append(loss_sum / n_trained)
        if step >= args.warmup:
            times.append(dt)
            tokens += sum(e.n_tokens for e in batch)
            step_flops += meter.step_flops([e.n_tokens for e in batch])
        if dist.is_main:
            print(f"  {quantization} x{dist.world}: step {step + 1} {sum(e.n_tokens for e in batch)} tokens {dt:.2f} s "
                  f"loss {losses[-1]:.3f}", file=sys.stderr, flush=True)
    secs = sum(times)
    res = {"quantization": quantization, "processes": dist.world, "load_s": load_s, "tok_s": tokens / secs, "flops_s": step_flops / secs,
           "n_mat": meter.n_mat, "n_lora": meter.n_lora, "loss_first": losses[0], "loss_last": losses[-1],
           "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    del model, base, opt
    gc.collect()
    return res


def gpu_counts(arg: str | None, device: torch.device) -> list[int]:
    if arg:
        return [int(x) for x in arg.split(",")]
    n = torch.cuda.device_count() if device.type == "cuda" else 1
    counts = [c for c in (1, 2, 4, 8, 16, 32) if c < n]
    return counts + [n]


def child(model_dir: Path, args) -> None:
    """One process of a torchrun launch: trains every mode; rank 0 writes the results."""
    dist = Dist.from_env()
    device = model_lib.pick_device(args.device, dist.local_rank)
    dist.start(device)
    results = [run(model_dir, device, mode, args, dist) for mode in args.modes.split(",")]
    if dist.is_main:
        Path(args.child_out).write_text(json.dumps(results))
    dist.stop()


def launch(n: int, work: Path) -> list[dict]:
    out = work / f"results-{n}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", __file__,
           *sys.argv[1:], "--workdir", str(work), "--child-out", str(out)]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src" / "engine" / "trainer")})
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a tiny Llama (any device; proves the code path)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--modes", default="none,nf4", help="none = LoRA on bf16 (fp32 on the CPU), nf4 = QLoRA")
    ap.add_argument("--gpus", default=None, help="process counts, e.g. 1,2,4,8 (default: 1, 2, 4, ... every "
                                                 "visible GPU; 1 on a CPU)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--docs", type=int, default=None, help="documents per process per step")
    ap.add_argument("--doc-len", type=int, default=None, help="longest document (tokens)")
    ap.add_argument("--max-batch-tokens", type=int, default=8192,
                    help="tokens per packed forward (8B without gradient checkpointing: ~50 GB of activations at 8192)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.steps = args.steps or (3 if args.tiny else 5)
    args.docs = args.docs or (4 if args.tiny else 8)
    args.doc_len = args.doc_len or (256 if args.tiny else 2048)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="openft-gpu-train-"))
    model_dir = work / ("llama-tiny" if args.tiny else "llama3-8b-shape")
    if args.child_out:
        return child(model_dir, args)

    device = model_lib.pick_device(args.device)
    shape = TINY if args.tiny else LLAMA3_8B
    if not args.tiny and device.type != "cuda":
        raise SystemExit("the 8B shape needs a CUDA GPU (none is visible here); use --tiny to check the code path")
    if not (model_dir / "config.json").exists():
        t = time.perf_counter()
        save_random_model(shape, model_dir, device)
        print(f"random weights saved to {model_dir} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results = [r for n in gpu_counts(args.gpus, device) for r in launch(n, work)]
    report(results, device, args)


def report(results: list[dict], device: torch.device, args) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} cores"
    print(f"\nGPU training bench: {'TINY Llama (code-path check)' if args.tiny else 'Llama-3-8B shape'}, "
          f"random weights, LoRA r={args.rank} on q/k/v/o/gate/up/down; {args.docs} docs/step per process of "
          f"{args.doc_len // 2}-{args.doc_len} tokens, packed; {args.warmup} warm-up + {args.steps} timed steps")
    print(f"ran on: {device.type.upper()} ({name})")
    if device.type != "cuda":
        print("NOTE: no GPU was used; these numbers are not GPU numbers (MFU against the H200 peak is not shown)")
    pk = ", ".join(f"{n} {metadata.version(n)}" for n in ["torch", "transformers", "peft", "bitsandbytes"])
    print(f"peers: {pk}\n")
    hdr = (f"{'mode':<18} {'procs':>5} {'tokens/s':>10} {'MFU@788T':>9} {'MFU@989T':>9} {'scaling':>8} "
           f"{'peak GPU GB':>12} {'load s':>7} {'loss':>14}")
    print(hdr)
    print("-" * len(hdr))
    gpu = device.type == "cuda"
    one = {r["quantization"]: r["tok_s"] for r in results if r["processes"] == 1}
    for r in results:
        n = r["processes"]
        label = "QLoRA (NF4)" if r["quantization"] == "nf4" else ("LoRA bf16" if gpu else "LoRA fp32")
        mfu1 = f"{r['flops_s'] / (PEAK_MEASURED * n):.1%}" if gpu else "n/a"
        mfu2 = f"{r['flops_s'] / (PEAK_DATASHEET * n):.1%}" if gpu else "n/a"
        base = one.get(r["quantization"])
        scaling = f"{r['tok_s'] / (n * base):.1%}" if base else "n/a"
        mem = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "n/a"
        print(f"{label:<18} {n:>5} {r['tok_s']:>10.1f} {mfu1:>9} {mfu2:>9} {scaling:>8} {mem:>12} "
              f"{r['load_s']:>7.0f} {r['loss_first']:>6.3f}->{r['loss_last']:.3f}")
    r0 = results[0]
    print(f"\nN_mat {r0['n_mat'] / 1e9:.3f} B, N_lora {r0['n_lora'] / 1e6:.1f} M; model FLOPs as in openft_trainer/flops.py")


if __name__ == "__main__":
    main()
