"""Job helpers shared by the Python SDK suites."""

from __future__ import annotations

import time
from typing import Sequence

import openai
import pytest


def wait_status(c: openai.OpenAI, job_id: str, statuses: Sequence[str], timeout: float = 30.0, poll: float = 0.1):
    """The job once its status is one of `statuses`; the test fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = c.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stuck in {job.status}, wanted {'|'.join(statuses)}")
        time.sleep(poll)
