"""The Uploads API and checkpoint permissions through the official `openai` Python package
(retries off), against the real server: `client.uploads.upload_file_chunked`, parts in parallel
and out of order, md5 and size checks, cancel; admin keys vs project keys."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest


def jsonl(n: int) -> bytes:
    rows = ({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(n))
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(projects=["other"], admin=True)


def test_upload_file_chunked_makes_a_file(client: openai.OpenAI, tmp_path: Path) -> None:
    data = jsonl(200)
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    up = client.uploads.upload_file_chunked(
        file=path, mime_type="text/jsonl", purpose="fine-tune", part_size=1000, md5=hashlib.md5(data).hexdigest()
    )
    assert up.status == "completed"
    assert up.object == "upload"
    assert up.file is not None and up.file.bytes == len(data) and up.file.filename == "train.jsonl"
    assert client.files.content(up.file.id).read() == data
    # From bytes too (the filename is then given).
    again = client.uploads.upload_file_chunked(file=data, filename="b.jsonl", bytes=len(data), mime_type="text/jsonl", purpose="fine-tune", part_size=4096)
    assert again.file is not None and client.files.retrieve(again.file.id).bytes == len(data)


def test_md5_mismatch_is_a_400_naming_md5(client: openai.OpenAI) -> None:
    data = jsonl(20)
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.upload_file_chunked(file=data, filename="t.jsonl", bytes=len(data), mime_type="text/jsonl", purpose="fine-tune", md5="0" * 32)
    assert info.value.body["param"] == "md5"
    assert info.value.body["code"] == "checksum_mismatch"


def test_parallel_out_of_order_parts_and_the_declared_total(client: openai.OpenAI) -> None:
    data = jsonl(300)
    size = len(data) // 4 + 1
    pieces = [data[i * size : (i + 1) * size] for i in range(4)]
    up = client.uploads.create(filename="p.jsonl", purpose="fine-tune", bytes=len(data), mime_type="text/jsonl")
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda i: client.uploads.parts.create(up.id, data=pieces[i]), [3, 2, 1, 0]))
    ids = [p.id for p in reversed(parts)]
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.complete(up.id, part_ids=ids[:3])
    assert info.value.body["param"] == "part_ids"
    assert info.value.body["code"] == "invalid_upload_size"
    done = client.uploads.complete(up.id, part_ids=ids)
    assert done.status == "completed" and done.file is not None
    assert client.files.content(done.file.id).read() == data


def test_cancelled_upload_takes_no_parts(client: openai.OpenAI) -> None:
    up = client.uploads.create(filename="c.jsonl", purpose="fine-tune", bytes=10, mime_type="text/jsonl")
    assert client.uploads.cancel(up.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as info:
        client.uploads.parts.create(up.id, data=b"0123456789")
    assert info.value.body["code"] == "invalid_upload_state"


def test_permissions_need_an_admin_key_and_admin_keys_nothing_else(server, client: openai.OpenAI) -> None:
    # The Python SDK sends the permission routes' key from `api_key` (the Node SDK from `adminAPIKey`).
    as_admin = server.client(server.admin_key)
    with pytest.raises(openai.PermissionDeniedError):
        client.fine_tuning.checkpoints.permissions.create("ft:x:y::abc", project_ids=["other"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        as_admin.files.list()
    assert denied.value.body["code"] == "insufficient_permissions"
    with pytest.raises(openai.NotFoundError) as info:
        as_admin.fine_tuning.checkpoints.permissions.create("ft:x:y::abc", project_ids=["other"])
    assert info.value.body["param"] == "fine_tuned_model_checkpoint"
