# Schemathesis hooks for scripts/fuzz.sh. The worker claim is a long poll that waits up to
# `wait_seconds` (default 20, at most 60) when no job is queued, as openapi.yaml documents; the
# fuzzer sends hundreds of claims, so each that names a wait waits at most 1 s here to keep the run bounded. The
# wait itself is covered by test/worker-protocol.test.ts.
import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path != "/internal/v1/claim" or case.method.upper() != "POST":
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait_seconds"), (int, float)) and not isinstance(body.get("wait_seconds"), bool):
        body["wait_seconds"] = min(body["wait_seconds"], 1)
