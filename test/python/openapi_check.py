"""Checks every live response the Python SDK suites' clients receive against openapi.yaml: the
status is documented for the operation, the content type is one the document gives for it, and the
body matches its schema; an event stream's `data:` lines are ChatCompletionChunks (an ErrorResponse
after the first), ending with `data: [DONE]`. The Python twin of test/helpers/checked-fetch.ts.

A mismatch raises from the response hook, so the request fails (the SDK reports a connection error
whose cause names the mismatch), and is kept in VIOLATIONS for TestServer.dispose().
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional

import httpx2
import yaml
from jsonschema import Draft202012Validator

DOC = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text(encoding="utf-8"))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
VIOLATIONS: List[str] = []


class OpenApiMismatch(Exception):
    pass


def _validator(schema: dict) -> Draft202012Validator:
    # `#/components/...` references resolve against the root, so the components travel along.
    return Draft202012Validator({**schema, "components": DOC["components"]})


def _schema_problem(schema: dict, value: object) -> Optional[str]:
    errors = sorted(_validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    lines = [f"  /{'/'.join(map(str, e.absolute_path))} {e.message[:300]}" for e in errors[:10]]
    return "\n".join(lines) + f"\nbody: {json.dumps(value)[:1000]}"


def template_of(method: str, path: str) -> Optional[str]:
    """The documented path template `path` is an instance of (the one with fewest parameters)."""
    segments = path.split("/")
    found = []
    for template, item in DOC["paths"].items():
        if method.lower() not in item:
            continue
        parts = template.split("/")
        if len(parts) == len(segments) and all(re.fullmatch(r"\{[^}]+\}", p) or p == s for p, s in zip(parts, segments)):
            found.append(template)
    return min(found, key=lambda t: t.count("{")) if found else None


def _response(method: str, template: str, status: int) -> Optional[dict]:
    responses = DOC["paths"][template][method.lower()]["responses"]
    r = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
    while isinstance(r, dict) and "$ref" in r:
        node = DOC
        for key in r["$ref"][2:].split("/"):
            node = node[key]
        r = node
    return r


def _stream_problem(text: str) -> Optional[str]:
    chunk_schema = {"$ref": "#/components/schemas/ChatCompletionChunk"}
    error_schema = {"$ref": "#/components/schemas/ErrorResponse"}
    done, errored, n = False, False, 0
    for line in text.split("\n"):
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if done:
            return "an event after data: [DONE]"
        if errored:
            return "an event after the error event"
        if data == "[DONE]":
            done = True
            continue
        try:
            value = json.loads(data)
        except ValueError:
            return f"a data line that is not JSON: {data[:200]}"
        errored = n > 0 and isinstance(value, dict) and "error" in value
        schema = error_schema if errored else chunk_schema
        problem = _schema_problem(schema, value)
        if problem:
            return f"chunk {n + 1}:\n{problem}"
        n += 1
    # An error event ends the stream without [DONE] (openapi.yaml's ChatCompletionStream).
    return None if done or errored else "the stream ends without data: [DONE]"


def problem_of(method: str, path: str, response: httpx2.Response) -> Optional[str]:
    """Why the response does not match openapi.yaml, or None."""
    method = method.upper()
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    template = template_of(method, path)
    where = f"{method} {template or path} {response.status_code}"
    if template is None:
        # Not an operation of the document (an unknown route): it must still answer in the envelope.
        if response.status_code < 400:
            return f"{where}: openapi.yaml documents no such operation"
        try:
            body = response.json()
        except ValueError:
            return f"{where}: an undocumented route answered without JSON"
        problem = _schema_problem({"$ref": "#/components/schemas/ErrorResponse"}, body)
        return f"{where}: {problem}" if problem else None
    documented = _response(method, template, response.status_code)
    if documented is None:
        return f"{where}: openapi.yaml documents no such response"
    content = {k.lower(): v for k, v in (documented.get("content") or {}).items()}
    if not content:
        return f"{where}: documented without a body, got {len(response.content)} bytes" if response.content else None
    if content_type not in content:
        return f"{where}: content-type {content_type or '(none)'} is not one of {', '.join(content)}"
    if content_type == "text/event-stream":
        problem = _stream_problem(response.text)
        return f"{where}: {problem}" if problem else None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            body = response.json()
        except ValueError:
            return f"{where}: the body is not JSON: {response.text[:200]}"
        problem = _schema_problem(content[content_type]["schema"], body)
        return f"{where}: the body does not match openapi.yaml:\n{problem}" if problem else None
    return None


def check_response(response: httpx2.Response) -> None:
    """An httpx response hook: reads the body (the SDK then reads it from memory) and checks it."""
    request = response.request
    if request.url.scheme != "http":
        return
    response.read()
    problem = problem_of(request.method, request.url.path, response)
    if problem:
        VIOLATIONS.append(problem)
        raise OpenApiMismatch(f"openapi.yaml mismatch: {problem}")
