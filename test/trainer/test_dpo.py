"""DPO (openft_trainer/dpo.py): the loss against TRL's DPOTrainer on the same model and pairs, a run
that learns the preference, the parent adapter as the reference, and exact resume."""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import make_spec, run_in_process, saved_adapter_dir, write_jsonl

from openft_trainer import dpo, model as model_lib

# Both sides compute in fp32 from the same weights and tokens; what differs is padded batches
# (TRL) against packed rows with per-document attention (ours), worth ~1e-7 in the summed
# log-probabilities here. 1e-5 on the loss leaves room for that, and a wrong sign, beta,
# reference or token span moves the loss by far more (0.01 and up on these pairs).
LOSS_TOLERANCE = 1e-5


def preference_rows(n: int, seed: int = 0, alias: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        messages = [{"role": "system", "content": "You add numbers."},
                    {"role": "user", "content": f"What is {a} plus {b}?"}]
        if i % 3 == 1:  # an earlier assistant turn in the input: context, not scored
            messages = [messages[0], {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                        messages[1]]
        good, bad = f"{a + b}. Done", f"I think it is {a + b + rng.randint(1, 9)}, but I am not sure."
        keys = ("preferred_completion", "non_preferred_completion") if alias and i % 2 else (
            "preferred_output", "non_preferred_output")
        rows.append({"input": {"messages": messages}, keys[0]: [{"role": "assistant", "content": good}],
                     keys[1]: [{"role": "assistant", "content": bad}]})
    return rows


def test_loss_matches_trl_dpo_trainer(model_dirs, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model_dir = model_dirs("llama")
    tok = model_lib.load_tokenizer(str(model_dir))
    rows = preference_rows(6)
    pairs = dpo.load_pairs(write_jsonl(tmp_path / "p.jsonl", rows), tok, None)
    torch.manual_seed(0)
    base = model_lib.load_base(str(model_dir), torch.device("cpu"), "none", dtype=torch.float32)
    model = model_lib.add_lora(base, rank=8, alpha=16, dropout=0.0)
    with torch.no_grad():  # move the adapter off its identity start, so policy != reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    reference = dpo.reference_logps(model, pairs, 16384, "cpu", with_adapter=False)
    with torch.no_grad():
        policy = dpo.sequence_logps(model, dpo._documents(pairs), "cpu").view(-1, 2)
    losses, chosen, rejected = dpo.dpo_loss(policy, reference, beta=0.3)

    dataset = Dataset.from_list([{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                                  "rejected": r["non_preferred_output"]} for r in rows])
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, per_device_eval_batch_size=len(rows),
                     use_cpu=True, bf16=False, report_to=[], dataset_num_proc=None)
    # TRL's reference for an adapter it is handed is a copy of that adapter ("ref"); ours for a new
    # adapter is the frozen base, so TRL gets the base as an explicit reference model
    ref_model = model_lib.load_base(str(model_dir), torch.device("cpu"), "none", dtype=torch.float32)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=dataset, eval_dataset=dataset,
                         processing_class=tok)
    # the same tokens on both sides: prompt + output, and the output alone scored
    for pair, row in zip(pairs, trainer.eval_dataset):
        for ours, theirs in ((pair.chosen, row["chosen_ids"]), (pair.rejected, row["rejected_ids"])):
            assert ours.input_ids == row["prompt_ids"] + theirs
            assert [t for t in ours.targets if t != -100] == theirs
    metrics = trainer.evaluate()
    assert abs(metrics["eval_loss"] - float(losses.mean())) < LOSS_TOLERANCE
    margins = float((chosen - rejected).mean())
    assert math.isclose(metrics["eval_rewards/margins"], margins, rel_tol=1e-4, abs_tol=1e-6)
    assert metrics["eval_rewards/accuracies"] == pytest.approx(float((chosen > rejected).float().mean()))
    assert float(losses.mean()) > 0.01 + math.log(2) or float(losses.mean()) < math.log(2) - 0.01


def dpo_spec(model_dirs, tmp_path, name, rows=None, **overrides):
    train = write_jsonl(tmp_path / f"{name}.jsonl", rows or preference_rows(12, alias=True))
    hp = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 5.0, "beta": 0.5}
    hp.update(overrides.pop("hyperparameters", {}))
    return make_spec(model_dirs("llama"), train, tmp_path / name, method="dpo", hyperparameters=hp, **overrides)


@pytest.fixture(scope="module")
def dpo_run(model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo")
    return run_in_process(dpo_spec(model_dirs, tmp, "run", validation_file=write_jsonl(
        tmp / "valid.jsonl", preference_rows(4, seed=9))))


def test_rpo_adds_the_preferred_outputs_mean_token_nll(model_dirs, tmp_path):
    """rpo_alpha > 0: each pair's loss is DPO's plus rpo_alpha x the preferred output's mean token
    cross-entropy, the number the supervised trainer computes for that output (train.forward_stats);
    the rewards are DPO's either way."""
    from openft_trainer import train

    model_dir = model_dirs("llama")
    tok = model_lib.load_tokenizer(str(model_dir))
    pairs = dpo.load_pairs(write_jsonl(tmp_path / "p.jsonl", preference_rows(4, seed=3)), tok, None)
    torch.manual_seed(0)
    model = model_lib.add_lora(model_lib.load_base(str(model_dir), torch.device("cpu"), "none", dtype=torch.float32),
                               rank=8, alpha=16, dropout=0.0).eval()
    with torch.no_grad():
        policy = dpo.sequence_logps(model, dpo._documents(pairs), "cpu").view(-1, 2)
        reference = policy + torch.tensor([[-0.3, 0.2]])
        tokens = torch.tensor([p.chosen.n_trained for p in pairs])
        plain, chosen, rejected = dpo.dpo_loss(policy, reference, beta=0.2)
        rpo, chosen_rpo, rejected_rpo = dpo.dpo_loss(policy, reference, 0.2, 0.5, tokens)
        assert torch.equal(chosen, chosen_rpo) and torch.equal(rejected, rejected_rpo)
        for i, pair in enumerate(pairs):
            loss_sum, n, _ = train.forward_stats(model, [pair.chosen], "cpu")
            assert n == pair.chosen.n_trained
            assert math.isclose(float(rpo[i] - plain[i]), 0.5 * float(loss_sum) / n, rel_tol=1e-5)


def test_a_run_learns_the_preference(dpo_run):
    _, events, code = dpo_run
    assert code == 0
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 10))
    assert abs(metrics[0]["train_loss"] - math.log(2)) < 0.05  # policy == reference at the start
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.1
    assert metrics[-1]["train_reward_accuracy"] == 1.0 and metrics[-1]["train_reward_margin"] > 0
    assert "train_mean_token_accuracy" not in metrics[-1]
    checkpoints = [e for e in events if e["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [3, 6, 9]
    last = checkpoints[-1]["metrics"]
    assert set(last) >= {"train_loss", "train_reward_accuracy", "train_reward_margin", "valid_loss",
                         "valid_reward_accuracy", "valid_reward_margin", "full_valid_loss"}
    assert last["valid_reward_margin"] > 0
    saved_adapter_dir(events)


def test_the_parent_adapter_is_the_reference(dpo_run, model_dirs, tmp_path):
    """Continuing an ft: model: the first step's loss is log 2 (policy == reference == parent),
    not what the parent's margins would give against the base."""
    _, events, _ = dpo_run
    parent = saved_adapter_dir(events)
    run, cont, code = run_in_process(dpo_spec(model_dirs, tmp_path, "cont", init_adapter=parent,
                                              hyperparameters={"n_epochs": 1}))
    assert code == 0
    first = next(e for e in cont if e["type"] == "metrics")
    assert abs(first["train_loss"] - math.log(2)) < 0.02, first
    # the same pairs scored against the base instead: the parent already prefers the good outputs
    base_ref = dpo.reference_logps(run.model, run.train_set, 16384, "cpu", with_adapter=False)
    assert bool((run.reference["train"] != base_ref).any())


def test_stop_and_resume_replays_the_uninterrupted_run(model_dirs, tmp_path):
    from conftest import train_losses
    from openft_trainer import spec as spec_lib
    from openft_trainer.protocol import Protocol, StopFlag
    from openft_trainer.errors import TrainerError

    _, reference, _ = run_in_process(dpo_spec(model_dirs, tmp_path, "ref"))

    class StopAt(Protocol):
        def __init__(self, flag):
            self.flag, self.events = flag, []

        def emit(self, type_, **fields):
            self.events.append({"type": type_, **fields})
            if type_ == "metrics" and fields["step"] == 4:
                self.flag.requested = True

    flag = StopFlag()
    proto = StopAt(flag)
    assert dpo.DpoRun(spec_lib.parse(dpo_spec(model_dirs, tmp_path, "mid")), proto, flag).run() == 0
    ckpt = proto.events[-2]["dir"]
    _, resumed, _ = run_in_process(dpo_spec(model_dirs, tmp_path, "mid", resume_from=ckpt))
    assert train_losses(resumed) == train_losses(reference)[4:]
    # a supervised checkpoint (no DPO reference in it) is refused
    _, sft, _ = run_in_process(make_spec(model_dirs("llama"), write_jsonl(tmp_path / "s.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 4),
        tmp_path / "sft", hyperparameters={"n_epochs": 1}))
    sft_ckpt = next(e for e in sft if e["type"] == "checkpoint")["dir"]
    with pytest.raises(TrainerError) as err:
        run_in_process(dpo_spec(model_dirs, tmp_path, "bad", resume_from=sft_ckpt))
    assert err.value.code == "resume_failed"


@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_two_processes_train_as_one(model_dirs, tmp_path, sharding):
    """DPO under torchrun (2 processes, gloo), data parallel or FSDP: each trains its share of a
    step's pairs, the gradients and sums are reduced, so the losses, reward accuracy and margin
    are one process's to float rounding (1e-5 relative, as test_distributed.py states for
    supervised jobs)."""
    from conftest import run_torchrun

    spec = dpo_spec(model_dirs, tmp_path, "one", hyperparameters={"n_epochs": 1, "batch_size": 5},
                    dtype="float32", validation_file=write_jsonl(tmp_path / "v.jsonl", preference_rows(3, seed=4)))
    _, one, code = run_in_process(spec)
    assert code == 0
    events, code, err = run_torchrun(dict(spec, output_dir=str(tmp_path / "two"), sharding=sharding),
                                     tmp_path / "two.json")
    assert code == 0, err[-3000:]
    assert events[0]["processes"] == 2 and events[0]["sharding"] == sharding

    def metrics(evs):
        return [e for e in evs if e["type"] == "metrics"]

    assert len(metrics(events)) == len(metrics(one)) == 3
    for a, b in zip(metrics(events), metrics(one)):
        for key in ("train_loss", "train_reward_accuracy", "train_reward_margin"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), (key, a, b)
    assert abs(metrics(events)[-1]["valid_loss"] - metrics(one)[-1]["valid_loss"]) <= 1e-5
