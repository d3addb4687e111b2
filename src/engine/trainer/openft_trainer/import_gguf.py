"""Turns a GGUF file into a Hugging Face model folder the trainer and the server can use.

    python -m openft_trainer.import_gguf FILE.gguf OUT_DIR

transformers dequantizes GGUF weights on load, but a GGUF-loaded model can be neither trained
nor saved as loaded: its weights are copied into a fresh model built from the same
config, saved in bf16 with the tokenizer and chat template rebuilt from the GGUF metadata. The
folder is written beside OUT_DIR and renamed into place, so a crash leaves no half folder.
Prints one JSON line: {"type": "done", "dir", "architecture", "parameters"} or an error. On a
terminal, stderr shows each stage and transformers' progress bars; elsewhere it stays quiet.
"""

import json
import os
import shutil
import sys


def _stage(text: str) -> None:
    if sys.stderr.isatty():
        print(f"import-gguf: {text}", file=sys.stderr, flush=True)


def import_gguf(gguf_path: str, out_dir: str) -> dict:
    if not sys.stderr.isatty():
        # transformers' GGUF reader calls tqdm itself, past its own switch below; tqdm reads
        # TQDM_* overrides when it is first imported, so this goes before transformers.
        os.environ["TQDM_DISABLE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    folder, name = os.path.split(os.path.abspath(gguf_path))
    _stage(f"[1/3] reading and dequantizing {name}")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    _stage("[2/3] copying the weights into a trainable model")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=True)
    partial = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    _stage(f"[3/3] saving {out_dir} (bf16 safetensors, tokenizer, chat template)")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.rename(partial, out_dir)
    return {
        "type": "done",
        "dir": out_dir,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m openft_trainer.import_gguf FILE.gguf OUT_DIR", file=sys.stderr)
        return 2
    gguf_path, out_dir = argv
    if os.path.exists(out_dir):
        print(json.dumps({"type": "error", "code": "exists", "message": f"{out_dir} already exists"}), flush=True)
        return 1
    try:
        result = import_gguf(gguf_path, out_dir)
    except Exception as err:  # noqa: BLE001 - reported as one protocol line
        print(json.dumps({"type": "error", "code": "import_failed", "message": f"{type(err).__name__}: {err}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
