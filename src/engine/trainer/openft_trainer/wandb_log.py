"""Forwards a job's metrics to Weights & Biases (the job's `integrations: [{type: "wandb", ...}]`).

The protocol stays the source of truth: WandbProtocol passes every event through unchanged and
also logs each `metrics` event (every numeric field, at its step) to one wandb run per job, named
by the job id (run_id) so a paused or requeued job continues the same run (resume="allow").

Mode: WANDB_MODE when set (online, offline, disabled, shared); otherwise "online" only when an API
key is configured (WANDB_API_KEY) and the W&B server (WANDB_BASE_URL, default api.wandb.ai:443)
accepts a TCP connection within 2 s, else "offline": the run is written under
<output_dir>/wandb (or WANDB_DIR) for a later `wandb sync`. A wandb failure is logged and never
fails the training job.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlparse

from .protocol import Protocol

log = logging.getLogger("openft_trainer")

CONNECT_TIMEOUT_S = 2.0


def reachable(base_url: str) -> bool:
    url = urlparse(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def pick_mode(env: dict) -> str:
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY") and reachable(env.get("WANDB_BASE_URL") or "https://api.wandb.ai"):
        return "online"
    return "offline"


class WandbProtocol(Protocol):
    """A Protocol that also logs metrics events to wandb runs (one per wandb integration)."""

    def __init__(self, inner: Protocol, integrations, output_dir: str, config: dict):
        super().__init__(inner.stream)
        self.runs = []
        try:
            import wandb
        except Exception as e:  # the API checks for wandb; a worker without it still trains
            log.warning("wandb integration skipped: cannot import wandb: %s", e)
            return
        mode = pick_mode(dict(os.environ))
        directory = os.environ.get("WANDB_DIR") or os.path.join(os.path.abspath(output_dir), "wandb")
        os.makedirs(directory, exist_ok=True)
        for integration in integrations:
            w = integration["wandb"]
            try:
                self.runs.append(wandb.init(
                    project=w["project"], entity=w.get("entity"), name=w.get("name"), tags=w.get("tags") or None,
                    id=w.get("run_id"), resume="allow" if w.get("run_id") else None, mode=mode, dir=directory,
                    config=config, reinit="create_new"))
            except Exception as e:  # noqa: BLE001 - the job goes on without it
                log.warning("wandb.init failed for project %s: %s", w["project"], e)
        log.info("wandb: %d run(s) in %s mode under %s", len(self.runs), mode, directory)

    def emit(self, type_: str, **fields) -> None:
        super().emit(type_, **fields)
        if type_ == "metrics":
            values = {k: v for k, v in fields.items() if isinstance(v, (int, float)) and k != "step"}
            for run in self.runs:
                self._safely(run.log, values, step=fields["step"])
        elif type_ in ("done", "stopped", "error"):
            self.finish(exit_code=1 if type_ == "error" else 0)

    def finish(self, exit_code: int = 0) -> None:
        runs, self.runs = self.runs, []
        for run in runs:
            self._safely(run.finish, exit_code=exit_code)

    @staticmethod
    def _safely(fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            log.warning("wandb: %s failed: %s", getattr(fn, "__name__", "call"), e)
