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
    """The engine's MatMulNBits weights, dequantized: blocks of 32 along `in`, the largest-magnitude
    value of each block maps to -8, zero point 8 (src/engine/inference/quant.ts)."""
    out_dim, in_dim = w.shape
    pad = (-in_dim) % 32
    wb = torch.nn.functional.pad(w, (0, pad)).reshape(out_dim, -1, 32)
    idx = wb.abs().argmax(dim=-1, keepdim=True)
    scale = torch.gather(wb, -1, idx) / -8
    inv = torch.where(scale == 0, torch.zeros_like(scale), 1 / scale)
    q = torch.clamp(torch.round(wb * inv) + 8, 0, 15)
    return ((q - 8) * scale).reshape(out_dim, -1)[:, :in_dim]


def quantize_model(m) -> None:
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear):
                if name.endswith("lm_head") and mod.weight is m.get_input_embeddings().weight:
                    mod.weight = torch.nn.Parameter(mod.weight.detach().clone())  # untie: the embedding stays fp32
                mod.weight.copy_(dequantized_int4(mod.weight))


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
