"""The Files API through the official `openai` Python package (retries off), against the real server."""

from __future__ import annotations

import json
import re
import time
from typing import Callable, List

import httpx2
import openai
import pytest
from openai import omit
from openapi_check import check_response

THIRTY_DAYS = 30 * 24 * 3600
ENVELOPE_KEYS = ["code", "message", "param", "type"]


def line(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})


def jsonl(n: int) -> bytes:
    return "".join(line(i) + "\n" for i in range(n)).encode()


def expect_api_error(call: Callable[[], object], status: int, cls: type) -> openai.APIStatusError:
    """Runs call, which must fail with `cls` and HTTP `status` in OpenAI's envelope (all four keys),
    with an x-request-id and, since no 4xx is worth retrying, `x-should-retry: false`."""
    with pytest.raises(openai.APIStatusError) as info:
        call()
    err = info.value
    assert isinstance(err, cls), f"expected {cls.__name__}, got {type(err).__name__}: {err}"
    assert err.status_code == status, err.message
    raw = err.response.json()
    assert list(raw) == ["error"], raw
    assert sorted(raw["error"]) == ENVELOPE_KEYS, raw
    assert err.body == raw["error"]
    assert isinstance(raw["error"]["message"], str) and raw["error"]["message"]
    assert err.response.headers["content-type"].startswith("application/json")
    assert (err.request_id or "").startswith("req_"), err.response.headers
    assert err.response.headers.get("x-should-retry") == "false"
    return err


def recording_client(server, api_key=None):
    """A client whose outgoing requests are recorded as (method, url, headers, body-or-None)."""
    sent: List[tuple] = []

    def hook(request: httpx2.Request) -> None:
        body = request.read() if request.method != "POST" else None
        sent.append((request.method, request.url, request.headers, body))

    http = openai.DefaultHttpxClient(event_hooks={"request": [hook], "response": [check_response]})
    return server.client(api_key, http_client=http), sent


# -- upload, retrieve, content, delete -------------------------------------------------------------


def test_backend_is_the_one_asked_for(server):
    record = server.startup_record()
    if server.database_url:
        assert (record["database"], record["blobs"]) == ("postgres", "s3")
    else:
        assert (record["database"], record["blobs"]) == ("pglite", "fs")
    assert record["url"] == server.url


def test_upload_retrieve_content_delete_then_404(server, client):
    body = jsonl(12)
    before = time.time()
    raw = client.files.with_raw_response.create(file=("train.jsonl", body), purpose="fine-tune")
    created = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert created._request_id == raw.headers["x-request-id"]
    assert re.fullmatch(r"file-[A-Za-z0-9]{24}", created.id), created.id
    assert created.object == "file"
    assert created.bytes == len(body)
    assert created.filename == "train.jsonl"
    assert created.purpose == "fine-tune"
    assert created.status == "processed"
    assert created.expires_at is None
    assert isinstance(created.created_at, int)
    assert abs(created.created_at - before) < 60
    assert sorted(raw.http_response.json()) == sorted(
        ["id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"]
    )
    assert f"files/{created.id}" in server.visible_blobs()

    got = client.files.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    assert got._request_id != created._request_id, "a fresh x-request-id per response"

    content = client.files.content(created.id)
    assert content.read() == body
    assert content.response.headers["content-type"] == "application/octet-stream"
    assert content.response.headers["content-length"] == str(len(body))

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert f"files/{created.id}" not in server.visible_blobs()

    err = expect_api_error(lambda: client.files.retrieve(created.id), 404, openai.NotFoundError)
    assert err.param == "id"
    assert err.code is None
    assert err.type == "invalid_request_error"
    assert err.body["message"] == f"No such File object: {created.id}"
    assert err.request_id.startswith("req_")
    assert expect_api_error(lambda: client.files.content(created.id), 404, openai.NotFoundError).param == "id"
    assert expect_api_error(lambda: client.files.delete(created.id), 404, openai.NotFoundError).param == "id"
    assert created.id not in [f.id for f in client.files.list()]


def test_binary_content_survives_byte_for_byte(client):
    data = bytes((i * 131 + 7) % 256 for i in range(300_000))
    created = client.files.create(file=("blob.bin", data), purpose="user_data")
    assert created.bytes == len(data)
    assert client.files.content(created.id).read() == data
    empty = client.files.create(file=("empty.bin", b""), purpose="user_data")
    assert empty.bytes == 0
    assert client.files.content(empty.id).read() == b""


def test_repeated_content_downloads_leave_the_server_up(start_server):
    # Its own server: if downloads bring the process down, this test says so and the others are spared.
    s = start_server()
    c = s.client()
    data = b"z" * 1_000_000
    f = c.files.create(file=("a.bin", data), purpose="user_data")
    for i in range(40):
        try:
            assert c.files.content(f.id).read() == data
        except openai.APIConnectionError:
            time.sleep(0.2)
            pytest.fail(f"the server went away at download {i + 1} of 40:\n{s.log[-3000:]}")
    assert httpx2.get(f"{s.url}/healthz").status_code == 200


def test_upload_from_a_path_keeps_the_basename(client, tmp_path):
    path = tmp_path / "from-disk.jsonl"
    path.write_bytes(jsonl(3))
    created = client.files.create(file=path, purpose="fine-tune")
    assert created.filename == "from-disk.jsonl"
    assert created.bytes == path.stat().st_size
    with path.open("rb") as fh:
        again = client.files.create(file=fh, purpose="assistants")
    assert again.filename == "from-disk.jsonl"
    assert client.files.content(again.id).read() == path.read_bytes()


def test_a_line_split_across_chunks_and_crlf_line_ends_are_fine(client):
    big = json.dumps({"messages": [{"role": "user", "content": "z" * 300_000}]})
    body = f"{big}\r\n{line(2)}\r\n{big}".encode()  # no final newline either
    created = client.files.create(file=("crlf.jsonl", body), purpose="fine-tune")
    assert created.bytes == len(body)
    assert client.files.content(created.id).read() == body


# -- list --------------------------------------------------------------------------------------


def test_list_auto_paginates_over_more_than_two_pages(server):
    # Its own project, so nothing else shows up in its lists.
    lister, sent = recording_client(server, server.project_keys["lister"])
    ids = [lister.files.create(file=(f"p{i}.jsonl", jsonl(1)), purpose="fine-tune").id for i in range(7)]
    v = lister.files.create(file=("a.txt", b"x"), purpose="assistants")
    assert len(set(ids)) == 7

    sent.clear()
    seen = []
    for f in lister.files.list(limit=3, purpose="fine-tune"):
        seen.append(f.id)
        assert len(seen) <= 20, "pagination does not terminate"
    assert seen == ids[::-1], "newest first, each exactly once"
    pages = [r for r in sent if r[0] == "GET"]
    assert len(pages) == 3, [str(r[1]) for r in pages]
    assert [r[1].params.get("after") for r in pages] == [None, seen[2], seen[5]]
    assert all(r[1].params.get("limit") == "3" and r[1].params.get("purpose") == "fine-tune" for r in pages)

    asc = [f.id for f in lister.files.list(limit=2, order="asc")]
    assert asc == ids + [v.id]
    desc = [f.id for f in lister.files.list(limit=2, order="desc")]
    assert desc == (ids + [v.id])[::-1]
    assert [f.id for f in lister.files.list()] == desc, "default order is desc"

    # One page by hand: the five keys, cursors naming the page's ends.
    page = lister.files.with_raw_response.list(limit=3).http_response.json()
    assert sorted(page) == ["data", "first_id", "has_more", "last_id", "object"]
    assert page["object"] == "list"
    assert [f["id"] for f in page["data"]] == desc[:3]
    assert page["has_more"] is True
    assert page["first_id"] == page["data"][0]["id"]
    assert page["last_id"] == page["data"][-1]["id"]
    last = lister.files.with_raw_response.list(limit=3, after=desc[5]).http_response.json()
    assert [f["id"] for f in last["data"]] == desc[6:]
    assert (last["first_id"], last["last_id"], last["has_more"]) == (desc[6], desc[7], False)
    sdk_page = lister.files.list(limit=3, order="asc")
    assert sdk_page.has_next_page()
    assert [f.id for f in sdk_page.get_next_page().data] == asc[3:6]

    assistants = lister.files.list(purpose="assistants")
    assert [f.id for f in assistants.data] == [v.id]
    assert assistants.has_more is False
    assert all(f.purpose == "fine-tune" for f in lister.files.list(purpose="fine-tune"))

    empty = lister.files.with_raw_response.list(purpose="vision").http_response.json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize(
    "query,param",
    [({"limit": 0}, "limit"), ({"limit": 10001}, "limit"), ({"order": "sideways"}, "order"), ({"after": "nope"}, "after")],
)
def test_bad_list_queries_are_400_naming_the_param(client, query, param):
    err = expect_api_error(lambda: client.files.list(**query), 400, openai.BadRequestError)
    assert err.param == param
    assert err.type == "invalid_request_error"


# -- expiry ------------------------------------------------------------------------------------


def test_expires_after_sets_expires_at(client):
    f = client.files.create(
        file=("e.jsonl", jsonl(1)), purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert f.expires_at == f.created_at + 3600
    assert client.files.retrieve(f.id).expires_at == f.created_at + 3600
    longest = client.files.create(
        file=("e.txt", b"x"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": THIRTY_DAYS}
    )
    assert longest.expires_at == longest.created_at + THIRTY_DAYS


@pytest.mark.parametrize("seconds", [3599, 2_592_001])
def test_expires_after_out_of_range_is_400(server, client, seconds):
    before = len(client.files.list().data)
    err = expect_api_error(
        lambda: client.files.create(
            file=("e.jsonl", jsonl(1)), purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": seconds}
        ),
        400,
        openai.BadRequestError,
    )
    assert err.param == "expires_after.seconds"
    assert len(client.files.list().data) == before
    assert server.partial_blobs() == []


def test_batch_files_expire_after_30_days_by_default(client):
    b = client.files.create(file=("b.jsonl", jsonl(1)), purpose="batch")
    assert b.expires_at == b.created_at + THIRTY_DAYS
    kept = client.files.create(file=("k.jsonl", jsonl(1)), purpose="fine-tune")
    assert kept.expires_at is None


# -- bad uploads -------------------------------------------------------------------------------

BAD_UPLOADS = [
    # id, filename, bytes, purpose, param, code, message fragment
    ("missing purpose", "t.jsonl", jsonl(1), omit, "purpose", "missing_required_parameter", "'purpose'"),
    ("unknown purpose", "t.jsonl", jsonl(1), "nonsense", "purpose", "invalid_value", "'nonsense' is not one of"),
    ("fine-tune .txt", "notes.txt", jsonl(1), "fine-tune", "file", "invalid_file_format", "Must be .jsonl"),
    (
        "invalid JSON on line 3",
        "t.jsonl",
        f'{line(1)}\n{line(2)}\n{{"messages": [\n{line(4)}\n'.encode(),
        "fine-tune",
        "file",
        "invalid_file_format",
        "Line 3 is not valid JSON",
    ),
    ("array on line 2", "t.jsonl", f"{line(1)}\n[1, 2]\n".encode(), "fine-tune", "file", "invalid_file_format", "Line 2 is not a JSON dictionary"),
    ("number on line 1", "t.jsonl", b"42\n", "fine-tune", "file", "invalid_file_format", "Line 1 is not a JSON dictionary"),
    ("string on line 2", "t.jsonl", f'{line(1)}\n"text"'.encode(), "fine-tune", "file", "invalid_file_format", "Line 2 is not a JSON dictionary"),
    ("null on line 4", "t.jsonl", jsonl(3) + b"null\n", "fine-tune", "file", "invalid_file_format", "Line 4 is not a JSON dictionary"),
    ("empty line 2", "t.jsonl", f"{line(1)}\n\n{line(3)}\n".encode(), "fine-tune", "file", "invalid_file_format", "Line 2 is empty"),
    ("empty file", "t.jsonl", b"", "fine-tune", "file", "invalid_file_format", "empty"),
]


@pytest.mark.parametrize(
    "filename,data,purpose,param,code,fragment", [c[1:] for c in BAD_UPLOADS], ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_upload_is_400_naming_the_field_and_leaves_nothing(server, client, filename, data, purpose, param, code, fragment):
    before = [f.id for f in client.files.list()]
    blobs_before = server.visible_blobs()
    err = expect_api_error(lambda: client.files.create(file=(filename, data), purpose=purpose), 400, openai.BadRequestError)
    assert err.param == param
    assert err.code == code
    assert err.type == "invalid_request_error"
    assert fragment in err.body["message"], err.body["message"]
    if fragment.startswith("Line"):
        assert "Expected file to have JSONL format, where every line is a valid JSON dictionary" in err.body["message"]
    assert [f.id for f in client.files.list()] == before, "no rejected upload became a file"
    assert server.visible_blobs() == blobs_before
    assert server.partial_blobs() == []


def test_other_purposes_do_not_check_lines(client):
    f = client.files.create(file=("notes.txt", b"not json\n[1]\n"), purpose="user_data")
    assert f.status == "processed"
    assert f.filename == "notes.txt"


def test_too_large_upload_is_400_file_too_large(start_server):
    small = start_server(env={"OPENFT_MAX_UPLOAD_BYTES": "1024"})
    c = small.client()
    # One valid JSONL line of 4096 bytes: too large is the only thing wrong with it.
    data = b'{"pad": "' + b"x" * (4096 - 12) + b'"}\n'
    assert len(data) == 4096 and json.loads(data)
    for purpose, name in [("fine-tune", "big.jsonl"), ("user_data", "big.bin")]:
        err = expect_api_error(lambda: c.files.create(file=(name, data), purpose=purpose), 400, openai.BadRequestError)
        assert err.code == "file_too_large"
        assert err.param == "file"
        assert "1024 bytes" in err.body["message"]
    assert c.files.list().data == []
    assert small.visible_blobs() == []
    assert small.partial_blobs() == []
    at_limit = b"y" * 1024
    ok = c.files.create(file=("limit.bin", at_limit), purpose="user_data")
    assert (ok.status, ok.bytes) == ("processed", 1024)
    assert c.files.content(ok.id).read() == at_limit


# -- auth and isolation ------------------------------------------------------------------------


def test_wrong_key_is_401_in_the_envelope(server):
    wrong_key = "sk-wrong-key-000000000"
    wrong = server.client(wrong_key)
    err = expect_api_error(lambda: wrong.files.list(), 401, openai.AuthenticationError)
    assert err.code == "invalid_api_key"
    assert err.type == "invalid_request_error"
    assert err.param is None
    assert wrong_key not in err.body["message"], "the key is not echoed whole"
    expect_api_error(lambda: wrong.files.create(file=("t.jsonl", jsonl(1)), purpose="fine-tune"), 401, openai.AuthenticationError)

    # No key at all, straight over HTTP.
    res = httpx2.get(f"{server.base_url}/files")
    assert res.status_code == 401
    assert res.headers["content-type"].startswith("application/json")
    assert res.headers["x-should-retry"] == "false"
    assert res.headers["x-request-id"].startswith("req_")
    body = res.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ENVELOPE_KEYS
    assert body["error"]["code"] == "invalid_api_key"
    assert server.api_key not in server.log, "the key never reaches the log"


def test_another_projects_file_is_404_like_one_that_never_existed(client, other):
    body = jsonl(2)
    mine = client.files.create(file=("mine.jsonl", body), purpose="fine-tune")
    never_id = "file-doesnotexist0000000000"

    def compare(call):
        theirs = expect_api_error(lambda: call(mine.id), 404, openai.NotFoundError)
        never = expect_api_error(lambda: call(never_id), 404, openai.NotFoundError)
        assert theirs.body == {**never.body, "message": f"No such File object: {mine.id}"}
        assert never.body["message"] == f"No such File object: {never_id}"
        assert theirs.param == "id"

    compare(other.files.retrieve)
    compare(lambda i: other.files.content(i))
    compare(other.files.delete)
    assert mine.id not in [f.id for f in other.files.list()]
    assert mine.id not in [f.id for f in other.files.list(purpose="fine-tune", order="asc", limit=1)]
    # Still there, intact, for its owner.
    assert client.files.retrieve(mine.id).id == mine.id
    assert client.files.content(mine.id).read() == body
    assert mine.id in [f.id for f in client.files.list()]
    # And the other way round.
    theirs = other.files.create(file=("theirs.jsonl", body), purpose="fine-tune")
    expect_api_error(lambda: client.files.retrieve(theirs.id), 404, openai.NotFoundError)
    assert theirs.id not in [f.id for f in client.files.list()]


# -- HTTP details ------------------------------------------------------------------------------


def test_sdk_delete_sends_an_empty_json_body_and_works(server):
    c, sent = recording_client(server)
    f = c.files.create(file=("d.txt", b"d"), purpose="user_data")
    deleted = c.files.delete(f.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (f.id, "file", True)
    method, url, headers, body = sent[-1]
    assert (method, url.path) == ("DELETE", f"/v1/files/{f.id}")
    assert headers["content-type"] == "application/json", "the SDK's body-less DELETE"
    assert body == b""
    expect_api_error(lambda: c.files.retrieve(f.id), 404, openai.NotFoundError)


def test_raw_delete_with_and_without_content_type(server, client):
    a = client.files.create(file=("a.txt", b"a"), purpose="user_data")
    b = client.files.create(file=("b.txt", b"b"), purpose="user_data")
    auth = {"authorization": f"Bearer {server.api_key}"}
    with httpx2.Client(base_url=server.base_url, headers=auth) as http:
        with_json = http.request("DELETE", f"/files/{a.id}", headers={"content-type": "application/json"}, content=b"")
        assert with_json.status_code == 200, with_json.text
        assert with_json.json() == {"id": a.id, "object": "file", "deleted": True}
        bare = http.request("DELETE", f"/files/{b.id}")
        assert bare.status_code == 200, bare.text
        assert bare.json() == {"id": b.id, "object": "file", "deleted": True}
        bad_json = http.request("DELETE", f"/files/{a.id}", headers={"content-type": "application/json"}, content=b"{not json")
        assert bad_json.status_code == 400
        assert bad_json.headers["x-should-retry"] == "false"
        assert sorted(bad_json.json()["error"]) == ENVELOPE_KEYS


def test_unknown_route_is_404_in_the_envelope(server):
    auth = {"authorization": f"Bearer {server.api_key}"}
    res = httpx2.get(f"{server.base_url}/nothing/here", headers=auth)
    assert res.status_code == 404
    assert res.headers["content-type"].startswith("application/json")
    assert res.headers["x-request-id"].startswith("req_")
    assert res.headers["x-should-retry"] == "false"
    body = res.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ENVELOPE_KEYS
    assert body["error"]["type"] == "invalid_request_error"
    assert "GET /v1/nothing/here" in body["error"]["message"]
    # A known path with a method it does not have: 405 naming the allowed ones, in the envelope.
    wrong_method = httpx2.put(f"{server.base_url}/files", headers=auth)
    assert wrong_method.status_code == 405
    assert "GET" in wrong_method.headers["allow"] and "POST" in wrong_method.headers["allow"]
    assert sorted(wrong_method.json()["error"]) == ENVELOPE_KEYS


def test_upload_that_is_not_multipart_is_400(server):
    res = httpx2.post(
        f"{server.base_url}/files",
        headers={"authorization": f"Bearer {server.api_key}", "content-type": "application/json"},
        content=b'{"purpose": "fine-tune"}',
    )
    assert res.status_code == 400
    assert res.headers["x-should-retry"] == "false"
    assert res.json()["error"]["param"] == "file"
