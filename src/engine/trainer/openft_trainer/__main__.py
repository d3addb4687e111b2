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
  {"type":"error","code","message","rank"}   exit code 1 (codes: errors.py)
Under torchrun (several processes) rank 0 alone writes these, except `error`, which every rank
that fails writes (with its rank). Logs go to stderr. The table of events and their fields is
events.json (protocol.py checks every line against it; so does the worker that reads them).
`python -m openft_trainer --describe-spec` lists the spec's fields, defaults and help.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .dist import Dist  # noqa: E402
from .errors import TrainerError  # noqa: E402
from .protocol import Protocol, StopFlag  # noqa: E402


def _die_with_launcher() -> None:
    """Under torchrun, a process whose launcher is SIGKILLed (with the worker's child, by the OOM
    killer or an operator) would train on as an orphan; Linux's PR_SET_PDEATHSIG ends it with its
    parent. The attempt is lost anyway: the worker resumes the job from its newest checkpoint."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    try:
        import ctypes
        import signal

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the call
            os._exit(1)
    except (OSError, AttributeError):  # not Linux
        pass


def main(argv: list[str]) -> int:
    if argv == ["--describe-spec"]:
        from . import spec as spec_lib

        for name, kind, default, help_ in spec_lib.describe():
            print(f"{name:42} {kind:7} {default!s:10} {help_}")
        return 0
    _die_with_launcher()
    # a process that dies in native code (SIGABRT, SIGSEGV: torch, gloo, bitsandbytes) leaves
    # every thread's Python stack on stderr, the log tail the worker puts in the job's error
    faulthandler.enable(file=sys.stderr, all_threads=True)
    stop = StopFlag()
    stop.install()  # before the slow torch import, so an early SIGTERM is a clean stop too
    protocol = Protocol.claim_stdout()
    dist = Dist.from_env()
    error = lambda code, message: protocol.emit("error", code=code, message=message, rank=dist.rank)  # noqa: E731
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("openft_trainer")
    try:
        if len(argv) != 1:
            raise TrainerError("invalid_spec", "usage: python -m openft_trainer SPEC.json")
        from . import spec as spec_lib
        from .train import Run  # imports torch

        spec = spec_lib.load(argv[0])
        if spec.integrations and dist.rank == 0:  # rank 0 alone reports
            from .wandb_log import WandbProtocol

            protocol = WandbProtocol(protocol, spec.integrations, spec.output_dir,
                                     {"method": spec.method, **vars(spec.hyperparameters), "seed": spec.seed})
        if spec.method == "dpo":
            from .dpo import DpoRun as Run
        return Run(spec, protocol, stop, dist).run()
    except TrainerError as e:
        log.error("%s: %s", e.code, e.message)
        error(e.code, e.message)
    except MemoryError as e:
        error("out_of_memory", f"host out of memory: {e}")
    except Exception as e:  # noqa: BLE001 - reported, then exit 1
        traceback.print_exc(file=sys.stderr)
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA / accelerator)
            error("out_of_memory", str(e).splitlines()[0])
        else:
            error("internal_error", f"{type(e).__name__}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
