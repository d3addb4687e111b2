"""`python -m openft_trainer SPEC.json` (PYTHONPATH=src/engine/trainer): trains a LoRA/QLoRA adapter.

The spec's fields are documented in spec.py. stdout carries only these JSON lines, each flushed:
  {"type":"started","total_steps","n_examples","device","trainable_params",
   "start_step","n_validation_examples","learning_rate","quantization"}
  {"type":"metrics","step","total_steps","epoch","train_loss","train_mean_token_accuracy",
   "valid_loss"?,"valid_mean_token_accuracy"?,"tokens","steps_per_second","mfu"?}   every step;
      DPO (spec "method": "dpo", dpo.py) reports train_reward_accuracy and train_reward_margin
      instead of train_mean_token_accuracy (valid_* alike);
      valid_* at the end of each epoch when a validation file is given; tokens is cumulative
      (prompt tokens included, as OpenAI bills); mfu only on a GPU whose peak is known
  {"type":"checkpoint","step","epoch","dir","files":[...],"metrics":{"step","train_loss",
   "train_mean_token_accuracy","valid_loss"?,"valid_mean_token_accuracy"?,"full_valid_loss"?,
   "full_valid_mean_token_accuracy"?}}   end of every epoch, and on SIGTERM
  {"type":"stopped","step"}              after SIGTERM/SIGINT: exit code 0
  {"type":"done","adapter_dir","files":[...],"trained_tokens"}   exit code 0
  {"type":"error","code","message"}      exit code 1 (codes: errors.py)
Logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import TrainerError  # noqa: E402
from .protocol import Protocol, StopFlag  # noqa: E402


def main(argv: list[str]) -> int:
    stop = StopFlag()
    stop.install()  # before the slow torch import, so an early SIGTERM is a clean stop too
    protocol = Protocol.claim_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("openft_trainer")
    try:
        if len(argv) != 1:
            raise TrainerError("invalid_spec", "usage: python -m openft_trainer SPEC.json")
        from . import spec as spec_lib
        from .train import Run  # imports torch

        spec = spec_lib.load(argv[0])
        if spec.integrations:
            from .wandb_log import WandbProtocol

            protocol = WandbProtocol(protocol, spec.integrations, spec.output_dir,
                                     {"method": spec.method, **vars(spec.hyperparameters), "seed": spec.seed})
        if spec.method == "dpo":
            from .dpo import DpoRun as Run
        return Run(spec, protocol, stop).run()
    except TrainerError as e:
        log.error("%s: %s", e.code, e.message)
        protocol.emit("error", code=e.code, message=e.message)
    except MemoryError as e:
        protocol.emit("error", code="out_of_memory", message=f"host out of memory: {e}")
    except Exception as e:  # noqa: BLE001 - reported, then exit 1
        traceback.print_exc(file=sys.stderr)
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA / accelerator)
            protocol.emit("error", code="out_of_memory", message=str(e).splitlines()[0])
        else:
            protocol.emit("error", code="internal_error", message=f"{type(e).__name__}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
