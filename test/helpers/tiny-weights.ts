// Tiny random-weight model folders (config, safetensors, tokenizer, chat template) built by the
// trainer suite's Python fixture (test/trainer/tiny_models.py) in the project venv.
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { projectRoot } from "../../src/project-root.js";

export type TinyKind = "llama" | "llama-vllm" | "qwen2" | "qwen3";

export async function buildTinyModel(kind: TinyKind, dir: string, seed = 0): Promise<void> {
  const root = projectRoot();
  const code = "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from tiny_models import build; build(sys.argv[2], Path(sys.argv[3]), seed=int(sys.argv[4]))";
  await promisify(execFile)(path.join(root, ".venv/bin/python"), ["-c", code, path.join(root, "test/trainer"), kind, dir, String(seed)], {
    env: { PATH: process.env.PATH ?? "", HF_HUB_OFFLINE: "1", OMP_NUM_THREADS: "1" },
  });
}
