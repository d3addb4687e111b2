"""The process protocol: stdout carries one JSON object per line, flushed, and nothing else;
SIGTERM/SIGINT ask for a clean stop.

`Protocol.claim_stdout()` keeps the real stdout for events and points file descriptor 1 (and so
print(), tqdm, native libraries) at stderr, where logs belong.
"""

from __future__ import annotations

import json
import math
import logging
import os
import signal
import sys
from typing import Any, TextIO


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/Infinity
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Protocol:
    def __init__(self, stream: TextIO):
        self.stream = stream

    @classmethod
    def claim_stdout(cls) -> "Protocol":
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        return cls(os.fdopen(fd, "w", encoding="utf-8", buffering=1))

    def emit(self, type_: str, **fields: Any) -> None:
        line = json.dumps({"type": type_, **_clean(fields)}, separators=(",", ":"), allow_nan=False)
        self.stream.write(line + "\n")
        self.stream.flush()


log = logging.getLogger("openft_trainer")


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if not self.requested:
            log.info("signal %d: stopping after the current step", signum)
        self.requested = True
