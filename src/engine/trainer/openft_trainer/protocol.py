"""The process protocol: stdout carries one JSON object per line, flushed, and nothing else;
SIGTERM/SIGINT ask for a clean stop. Every event and its fields are declared in events.json, the
table the worker's reader (src/engine/worker/trainer-events.ts) uses too: emit refuses a line
that does not match it, so the two sides cannot drift apart silently.

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
from pathlib import Path
from typing import Any, TextIO


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN/Infinity
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


EVENTS: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).with_name("events.json")).read_text(encoding="utf-8"))["events"]
_TYPES = {"integer": int, "number": (int, float), "string": str, "object": dict, "string[]": list}


def check_event(type_: str, fields: dict) -> None:
    """Raises ValueError unless the event matches events.json."""
    declared = EVENTS.get(type_)
    if declared is None:
        raise ValueError(f"event type {type_!r} is not in events.json")
    unknown = set(fields) - set(declared)
    if unknown:
        raise ValueError(f"{type_} event: fields {sorted(unknown)} are not in events.json")
    for name, kind in declared.items():
        optional, kind = kind.endswith("?"), kind.rstrip("?")
        if name not in fields:
            if optional:
                continue
            raise ValueError(f"{type_} event: field {name!r} is missing")
        value = fields[name]
        number_null = kind in ("number", "integer") and value is None
        if not number_null and (isinstance(value, bool) or not isinstance(value, _TYPES[kind])):
            raise ValueError(f"{type_} event: field {name!r} must be {kind}, got {value!r}")


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
        fields = _clean(fields)
        check_event(type_, fields)
        line = json.dumps({"type": type_, **fields}, separators=(",", ":"), allow_nan=False)
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
