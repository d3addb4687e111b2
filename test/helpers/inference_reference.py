"""Reference logits for test/inference-engine.test.ts, from transformers (and peft) on the CPU.

usage: inference_reference.py SPEC.json
SPEC: {"build": [{"kind": "llama", "dir": "..."}],
       "adapters": [{"base": dir, "dir": out, "r": 8, "alpha": 16, "rslora": false, "targets": [...], "seed": 1}],
       "cases": [{"model": dir, "adapter": dir|null, "tokens": [...], "out": file}]}
Each case writes the fp32 logits of every position of the full-sequence forward ([T, V], raw little-endian).
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from tiny_models import build  # noqa: E402


def make_adapter(base: str, out: str, r: int, alpha: int, rslora: bool, targets: list, seed: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=targets, lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    peft_model.save_pretrained(out)


def dequantized_int4(w: torch.Tensor) -> torch.Tensor:
    """The engine's MatMulNBits weights, dequantized (src/engine/inference/quant.ts, same arithmetic
    in float64): blocks of 32 along `in`; per block the better of the symmetric grid (largest
    magnitude -> -8, zero point 8) and the asymmetric one (min..max over 16 levels, zero point
    rounded, scale refitted by least squares); scales stored as float32; round half up."""
    import numpy as np

    out_dim, in_dim = w.shape
    pad = (-in_dim) % 32
    x = torch.nn.functional.pad(w.double(), (0, pad)).reshape(out_dim, -1, 32).numpy()
    valid = np.zeros(x.shape[-1] * x.shape[1], dtype=bool)
    valid[:in_dim] = True
    valid = valid.reshape(1, -1, 32)
    rnd = lambda a: np.floor(a + 0.5)  # noqa: E731

    def fit(scale, zero):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(scale == 0, 0.0, 1.0 / scale)
        q = np.clip(rnd(x * inv) + zero, 0, 15)
        deq = scale.astype(np.float32).astype(np.float64) * (q - zero)
        err = np.where(valid, (x - deq) ** 2, 0.0).sum(-1, keepdims=True)
        return q, err

    big = np.where(valid, np.abs(x), -1.0)
    idx = big.argmax(-1)[..., None]
    scale = np.take_along_axis(x, idx, -1) / -8
    zero = np.full_like(scale, 8.0)
    q, err = fit(scale, zero)
    lo = np.where(valid, x, np.inf).min(-1, keepdims=True)
    hi = np.where(valid, x, -np.inf).max(-1, keepdims=True)
    ok = hi > lo
    with np.errstate(divide="ignore", invalid="ignore"):
        s0 = np.where(ok, (hi - lo) / 15, 1.0)
        z0 = np.clip(rnd(-lo / s0), 0, 15)
    qb, eb = fit(s0, z0)
    d = np.where(valid, qb - z0, 0.0)
    num = (x * d).sum(-1, keepdims=True)
    den = (d * d).sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        s1 = np.where(den > 0, num / den, 0.0)
    q1, e1 = fit(s1, z0)
    refit = (den > 0) & (s1 > 0) & (e1 < eb)
    sb = np.where(refit, s1, s0)
    qb = np.where(refit, q1, qb)
    eb = np.where(refit, e1, eb)
    take = ok & (eb < err)
    scale = np.where(take, sb, scale)
    zero = np.where(take, z0, zero)
    q = np.where(take, qb, q)
    deq = scale.astype(np.float32).astype(np.float64) * (q - zero)
    return torch.from_numpy(deq.reshape(out_dim, -1)[:, :in_dim]).to(w.dtype)


class Int8Head(torch.nn.Module):
    """The engine's 8-bit output head (graph-builder int8MatMul, quant.ts quantizeInt8): weights
    per output row on max|w|/127 (round half up), each input row on max|x|/63 as uint8 around
    64 (float32 arithmetic and round half to even, as ONNX Runtime's Mul/Add/Round), an exact
    integer product, then scaled back."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().double()
        scale = w.abs().amax(1, keepdim=True) / 127
        inv = torch.where(scale == 0, torch.zeros_like(scale), 1 / scale)
        self.q = torch.clamp(torch.floor(w * inv + 0.5), -127, 127)  # [out, in]
        self.col = (scale.float().double() / 127).float().squeeze(1)  # the stored float32 scale, / 127

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        row = torch.clamp(x.abs().amax(-1, keepdim=True), min=1e-30)
        xq = torch.round(x * (torch.tensor(63.0) / row) + 64.0) - 64.0
        acc = xq.double() @ self.q.T
        return acc.float() * self.col * (row * torch.tensor(127.0 / 63.0))


def quantize_model(m) -> None:
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lora_" not in name and not name.endswith("lm_head"):  # LoRA stays fp32 in the engine
                mod.weight.copy_(dequantized_int4(mod.weight))
        m.get_output_embeddings().forward = Int8Head(m.get_output_embeddings().weight).forward


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    for b in spec.get("build", []):
        build(b["kind"], Path(b["dir"]), seed=b.get("seed", 0))
    for a in spec.get("adapters", []):
        make_adapter(a["base"], a["dir"], a["r"], a["alpha"], a.get("rslora", False), a["targets"], a.get("seed", 1))
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    models = {}
    for c in spec.get("cases", []):
        key = (c["model"], c.get("adapter"), c.get("int4", False))
        if key not in models:
            m = AutoModelForCausalLM.from_pretrained(c["model"], dtype=torch.float32)
            if c.get("adapter"):
                m = PeftModel.from_pretrained(m, c["adapter"])
            if c.get("int4"):
                quantize_model(m)
            models[key] = m.eval()
        with torch.no_grad():
            logits = models[key](torch.tensor([c["tokens"]])).logits[0].float()
        Path(c["out"]).write_bytes(logits.contiguous().numpy().tobytes())


if __name__ == "__main__":
    main()
