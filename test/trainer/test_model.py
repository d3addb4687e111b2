"""Model-side checks in-process: packing exactness, learning, QLoRA on the CPU, adapter round trip,
and the FLOP formula."""

from __future__ import annotations

import pytest
import torch
from conftest import (addition_examples, fp32_base, make_spec, run_in_process, saved_adapter_dir, train_losses,
                      write_jsonl)
from transformers import AutoTokenizer

from openft_trainer import data, flops, model as model_lib
from openft_trainer.train import forward_stats


def lora_model(model_dir, quantization="none", attn="sdpa", dtype=torch.float32):
    # fp32 (the exact path) unless asked: the checks below compare numbers to 1e-5
    torch.manual_seed(0)
    base = model_lib.load_base(str(model_dir), torch.device("cpu"), quantization, attn_implementation=attn,
                               dtype=dtype)
    m = model_lib.add_lora(base, rank=8, alpha=16, dropout=0.0)
    # a non-zero adapter (lora_B starts at 0), so the check covers the LoRA path too
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return m


def encoded(model_dir, rows):
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return [data.encode_example(tok, r) for r in rows]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_packed_loss_equals_separate_examples(model_dirs, kind):
    m = lora_model(model_dirs(kind)).eval()
    rows = addition_examples(3, seed=1)
    rows[1]["messages"].append({"role": "user", "content": "And twice that?"})
    rows[1]["messages"].append({"role": "assistant", "content": "Twice that is a lot."})
    examples = encoded(model_dirs(kind), rows)
    with torch.no_grad():
        packed, n_packed, c_packed = forward_stats(m, examples, "cpu")
        separate = [forward_stats(m, [e], "cpu") for e in examples]
    total = sum(float(s) for s, _, _ in separate)
    n = sum(k for _, k, _ in separate)
    assert n_packed == n == sum(e.n_trained for e in examples) > 0
    assert c_packed == sum(c for _, _, c in separate)
    assert float(packed) / n == pytest.approx(total / n, abs=1e-5)


@pytest.fixture(scope="module")
def overfit_run(model_dirs, tmp_path_factory):
    d = tmp_path_factory.mktemp("overfit")
    train = write_jsonl(d / "train.jsonl", addition_examples(2, seed=3))
    # fp32: test_saved_adapter_loads_with_peft_and_matches compares logits bit for bit
    spec = make_spec(model_dirs("llama"), train, d / "out", hyperparameters={"n_epochs": 6, "batch_size": 2},
                     dtype="float32")
    return run_in_process(spec)


def test_loss_falls_on_an_overfit_set(overfit_run):
    _, events, code = overfit_run
    assert code == 0
    losses = train_losses(events)
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 1.0, losses


def test_saved_adapter_loads_with_peft_and_matches(overfit_run, model_dirs):
    from peft import PeftModel

    run, events, _ = overfit_run
    adapter = saved_adapter_dir(events)
    ids = torch.tensor([run.train_set[0].input_ids])
    run.model.eval()
    with torch.no_grad():
        expected = run.model(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(fp32_base(model_dirs("llama")), adapter).eval()
        got = loaded(input_ids=ids).logits
    assert torch.equal(got, expected)
    # the adapter really moved the model away from the base
    with torch.no_grad(), loaded.disable_adapter():
        assert not torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-3)


def test_init_adapter_continues_from_a_previous_adapter(overfit_run, model_dirs, tmp_path):
    _, first, _ = overfit_run
    rows = addition_examples(2, seed=3)  # the same data the adapter was trained on
    spec = make_spec(model_dirs("llama"), write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "out",
                     init_adapter=first[-1]["adapter_dir"],
                     hyperparameters={"n_epochs": 1, "lora_rank": 4})  # rank comes from the adapter
    run, events, code = run_in_process(spec)
    assert code == 0 and run.model.peft_config["default"].r == 8
    start_loss = train_losses(events)[0]
    fresh_start = train_losses(first)[0]
    assert start_loss < fresh_start - 0.5


def test_gradient_checkpointing_gives_the_same_losses(model_dirs, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", addition_examples(4, seed=8))
    plain = make_spec(model_dirs("qwen2"), train, tmp_path / "a", hyperparameters={"n_epochs": 1})
    _, a, _ = run_in_process(plain)
    run, b, _ = run_in_process(dict(plain, output_dir=str(tmp_path / "b"), gradient_checkpointing=True))
    assert run.model.base_model.model.is_gradient_checkpointing
    la = train_losses(a)
    lb = train_losses(b)
    assert lb == pytest.approx(la, abs=1e-5)


def test_qlora_nf4_runs_on_cpu_and_learns(model_dirs, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", addition_examples(2, seed=4))
    spec = make_spec(model_dirs("llama"), train, tmp_path / "out",
                     hyperparameters={"n_epochs": 5, "batch_size": 2, "quantization": "nf4"})
    run, events, code = run_in_process(spec)
    assert code == 0
    kinds = {type(mod).__name__ for mod in run.model.modules()}
    assert "Linear4bit" in kinds  # frozen projections really are 4-bit
    losses = train_losses(events)
    assert losses[-1] < losses[0] - 0.5, losses
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_flop_formula_matches_flop_counter(model_dirs, kind):
    from torch.utils.flop_counter import FlopCounterMode

    # eager attention: its matmuls are visible to FlopCounterMode (the CPU sdpa kernel is not)
    m = lora_model(model_dirs(kind), attn="eager").train()
    T = 256
    ids = torch.randint(0, m.config.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        out = m(input_ids=ids, use_cache=False)
        out.logits.float().logsumexp(-1).mean().backward()
    n_layers, d_attn = flops.attention_dims(m.config)
    n_mat, n_lora = flops.matmul_params(m), flops.lora_params(m)
    lm_head = m.config.vocab_size * m.config.hidden_size
    # one unpacked sequence with a dense causal mask computes T_ctx = T (see flops.py)
    whole = flops.flops_per_token(n_mat, n_lora, n_layers, d_attn, t_ctx=T)
    assert whole == pytest.approx(counter.get_total_flops() / T, rel=0.10)
    # the decoder stack alone (lm_head, a plain 4N matmul, dominates the total on a tiny model)
    counts = counter.get_flop_counts()
    stack = next(sum(v.values()) for k, v in counts.items() if k.endswith("base_model.model.model"))
    layers = flops.flops_per_token(n_mat - lm_head, n_lora, n_layers, d_attn, t_ctx=T)
    assert layers == pytest.approx(stack / T, rel=0.10), (layers, stack / T)
    assert flops.causal_context([4, 2]) == pytest.approx((8 + 2) / 6)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_per_document_attention_matches_the_masked_eager_attention(model_dirs, kind):
    """The default "sdpa" runs causal SDPA per packed document (model.packed_sdpa_forward, no mask);
    it must give the numbers of transformers' eager attention with its block-diagonal mask."""
    rows = addition_examples(3, seed=2)
    examples = encoded(model_dirs(kind), rows)
    stats = {}
    for attn in ("sdpa", "eager"):
        m = lora_model(model_dirs(kind), attn=attn).eval()
        if attn == "sdpa":
            assert m.config._attn_implementation == model_lib.PACKED_SDPA
        with torch.no_grad():
            stats[attn] = forward_stats(m, examples, "cpu")
    (s_packed, n, c), (s_eager, n_e, c_e) = stats["sdpa"], stats["eager"]
    assert n == n_e > 0 and c == c_e
    assert float(s_packed) / n == pytest.approx(float(s_eager) / n, abs=1e-5)
