"""The bf16 path on the CPU (spec "dtype"): a bf16 frozen base under autocast trains, keeps the LoRA
weights fp32, and saves an adapter that loads into an fp32 base with peft; the precision choice
and the CPU LoRA dropout."""

from __future__ import annotations

import pytest
import torch
from conftest import (addition_examples, fp32_base, make_spec, run_in_process, saved_adapter_dir, train_losses,
                      write_jsonl)

from openft_trainer import model as model_lib, spec as spec_lib
from openft_trainer.errors import TrainerError
from openft_trainer.train import forward_stats


@pytest.fixture(scope="module")
def bf16_run(model_dirs, tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16")
    train = write_jsonl(d / "train.jsonl", addition_examples(2, seed=3))
    spec = make_spec(model_dirs("llama"), train, d / "out", dtype="bfloat16",
                     hyperparameters={"n_epochs": 6, "batch_size": 2, "lora_dropout": 0.1})
    return run_in_process(spec)


def test_bf16_base_trains_with_fp32_lora_weights(bf16_run):
    run, events, code = bf16_run
    assert code == 0 and run.dtype == torch.bfloat16
    frozen = {p.dtype for n, p in run.model.named_parameters() if not p.requires_grad}
    trained = {p.dtype for p in run.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    kinds = {type(m).__name__ for m in run.model.modules()}
    assert "FastDropout" in kinds
    losses = train_losses(events)
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 1.0, losses


def test_bf16_adapter_loads_with_peft_on_an_fp32_base(bf16_run, model_dirs):
    from peft import PeftModel

    run, events, _ = bf16_run
    adapter = saved_adapter_dir(events)
    example = run.train_set[0]
    run.model.eval()
    with torch.no_grad():
        s_bf16, n, _ = forward_stats(run.model, [example], "cpu")
        base = fp32_base(model_dirs("llama"))
        base.config.use_cache = False
        s_base, _, _ = forward_stats(base, [example], "cpu")
        loaded = PeftModel.from_pretrained(base, adapter).eval()
        s_fp32, _, _ = forward_stats(loaded, [example], "cpu")
    loss_bf16, loss_fp32, loss_base = float(s_bf16) / n, float(s_fp32) / n, float(s_base) / n
    # the fp32 evaluation of the saved adapter agrees with the bf16 one to within one bf16 rounding
    # (relative 2^-8), and is far below the base model's loss
    assert loss_fp32 == pytest.approx(loss_bf16, rel=2**-8), (loss_fp32, loss_bf16)
    assert loss_fp32 < loss_base - 1.0, (loss_fp32, loss_base)


def test_dtype_choice(monkeypatch, tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert model_lib.resolve_dtype("float32", cpu) == model_lib.resolve_dtype("fp32", cuda) == torch.float32
    assert model_lib.resolve_dtype("bf16", cpu) == torch.bfloat16
    assert model_lib.resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(model_lib, "cpu_has_native_bf16", lambda: False)
    assert model_lib.resolve_dtype("auto", cpu) == torch.float32
    monkeypatch.setattr(model_lib, "cpu_has_native_bf16", lambda: True)
    assert model_lib.resolve_dtype("auto", cpu) == torch.bfloat16

    raw = make_spec(tmp_path, tmp_path / "t.jsonl", tmp_path / "out")
    monkeypatch.delenv("OPENFT_TRAIN_DTYPE", raising=False)
    assert spec_lib.parse(raw).dtype == "auto"
    monkeypatch.setenv("OPENFT_TRAIN_DTYPE", "fp32")
    assert spec_lib.parse(raw).dtype == "fp32"
    assert spec_lib.parse(dict(raw, dtype="bfloat16")).dtype == "bfloat16"  # the spec wins
    with pytest.raises(TrainerError) as e:
        spec_lib.parse(dict(raw, dtype="float16"))
    assert e.value.code == "invalid_spec"


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_fast_dropout_keeps_one_minus_p_and_rescales(p):
    torch.manual_seed(0)
    drop = model_lib.FastDropout(p)
    x = torch.ones(1001, 513, requires_grad=True)  # odd sizes: the 64-bit draws do not split evenly
    y = drop(x)
    kept = y != 0
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert float(kept.float().mean()) == pytest.approx(1 - p, abs=0.003)
    # all four 16-bit quarters of each 64-bit draw are used, each at rate p
    quarters = kept.flatten()[:-1].view(-1, 4).float().mean(0)
    assert quarters.tolist() == pytest.approx([1 - p] * 4, abs=0.005)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # driven by the torch RNG: a resumed run replays it
    assert not torch.equal(drop(x), y)
    assert drop(x.detach().bfloat16()).dtype == torch.bfloat16
    assert torch.equal(drop.eval()(x), x)
