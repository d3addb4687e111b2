"""Python side of bench/serve.ts (the serving benchmark).

  adapters  MODEL_DIR OUT_DIR [--n 8] [--std 0.02]
      Eight PEFT LoRA adapters for the model (r=16, lora_alpha=32 on q,k,v,o,gate,up,down, seed i
      for adapter i, random non-zero lora_B), saved as OUT_DIR/a{i}/ (save_pretrained) and, for
      llama.cpp, as OUT_DIR/a{i}.gguf. Prints a JSON line {"peft": [...], "gguf": [...]}.
  hf MODEL_DIR --prompt-ids JSON --tokens N --threads T --repeats R
      transformers' generate on torch CPU (fp32, greedy, min_new_tokens = max_new_tokens so EOS
      cannot end early): one warm-up, then R timed runs. Prints a JSON line with each run's TTFT,
      decode tokens/s and tokens, and this process's peak RSS. --adapter DIR applies a PEFT adapter
      (used to check the GGUF LoRA conversion against llama.cpp, not timed).

GGUF LoRA layout (what llama.cpp's convert_lora_to_gguf.py writes and llama-adapter.cpp checks):
general.type "adapter", adapter.type "lora", adapter.lora.alpha; per target tensor
`blk.{i}.{name}.weight.lora_a` with numpy shape (r, in) (= PEFT lora_A) and `.lora_b` with shape
(out, r) (= PEFT lora_B), so ggml sees a->ne = [in, r], b->ne = [r, out]. q and k rows are
permuted the way convert_hf_to_gguf permutes Llama's q_proj/k_proj (for rotary embeddings), which
only touches the output rows, so only lora_b of q and k is permuted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

GGUF_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
TARGETS = list(GGUF_NAMES)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def llama_permute(w, n_head: int):
    """convert_hf_to_gguf's LlamaModel.permute on the output rows of w (out, ...)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_lora(state: dict, alpha: float, cfg: dict, path: str) -> None:
    import re

    import gguf
    import numpy as np

    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    pat = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_(A|B)(?:\.default)?\.weight$")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(state):
        m = pat.search(name)
        if not m:
            raise ValueError(f"unexpected adapter tensor {name}")
        layer, proj, ab = int(m.group(1)), m.group(2), m.group(3)
        data = state[name].float().numpy().astype(np.float32)
        if ab == "B" and proj == "q_proj":
            data = llama_permute(data, n_head)
        elif ab == "B" and proj == "k_proj":
            data = llama_permute(data, n_kv)
        writer.add_tensor(f"blk.{layer}.{GGUF_NAMES[proj]}.weight.lora_{ab.lower()}", np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_adapters(args) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lcfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=TARGETS, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    os.makedirs(args.out, exist_ok=True)
    peft_dirs, gguf_files = [], []
    for i in range(args.n):
        g = torch.Generator().manual_seed(1000 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_A" in name:
                    bound = 1 / (p.shape[1] ** 0.5)
                    p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
                elif "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * args.std)
        d = os.path.join(args.out, f"a{i}")
        model.save_pretrained(d)
        state = load_file(os.path.join(d, "adapter_model.safetensors"))
        gg = os.path.join(args.out, f"a{i}.gguf")
        write_gguf_lora(state, args.alpha, cfg, gg)
        peft_dirs.append(d)
        gguf_files.append(gg)
    print(json.dumps({"peft": peft_dirs, "gguf": gguf_files}))


def hf_generate(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    ids = torch.tensor([json.loads(args.prompt_ids)], dtype=torch.long)

    class Clock:
        """A streamer that only timestamps: generate calls put() with the prompt, then each token."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.seen_prompt = False

        def put(self, value) -> None:
            now = time.perf_counter()
            if not self.seen_prompt:
                self.seen_prompt = True
                return
            self.times.append(now)
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())

        def end(self) -> None:
            pass

    def once(n: int) -> dict:
        clock = Clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           streamer=clock, pad_token_id=cfg_pad)
        first, last = clock.times[0], clock.times[-1]
        k = len(clock.times)
        return {"ttftMs": (first - t0) * 1000, "decodeTps": (k - 1) / (last - first) if k > 1 else 0.0,
                "tokens": k, "wallMs": (last - t0) * 1000, "ids": clock.tokens}

    gen_cfg = model.generation_config
    cfg_pad = gen_cfg.pad_token_id
    if cfg_pad is None:
        cfg_pad = gen_cfg.eos_token_id
    if isinstance(cfg_pad, list):
        cfg_pad = cfg_pad[0]
    once(min(args.tokens, 16))  # warm-up
    runs = [once(args.tokens) for _ in range(args.repeats)]
    print(json.dumps({"runs": runs, "peakRssBytes": peak_rss_bytes()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("adapters")
    a.add_argument("model")
    a.add_argument("out")
    a.add_argument("--n", type=int, default=8)
    a.add_argument("--rank", type=int, default=16)
    a.add_argument("--alpha", type=float, default=32.0)
    a.add_argument("--std", type=float, default=0.02)
    h = sub.add_parser("hf")
    h.add_argument("model")
    h.add_argument("--prompt-ids", required=True)
    h.add_argument("--tokens", type=int, default=128)
    h.add_argument("--threads", type=int, default=1)
    h.add_argument("--repeats", type=int, default=3)
    h.add_argument("--adapter", help="a PEFT adapter folder to apply (the GGUF LoRA check)")
    args = ap.parse_args()
    if args.cmd == "adapters":
        make_adapters(args)
    else:
        hf_generate(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
