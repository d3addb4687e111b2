"""Starts the real `openft serve` process for black-box tests through the official `openai` package.

The Python twin of test/helpers/server.ts. The backend is chosen by OPENFT_TEST_BACKEND:
"postgres-s3" (a fresh database on OPENFT_TEST_DATABASE_URL and a fresh bucket on the S3 server at
OPENFT_TEST_S3_ENDPOINT, both started by scripts/test-services.sh) or "embedded" (PGlite and a local
folder, the defaults). Each test module gets its own server(s); teardown stops them and removes
the data dir, the database and the bucket.
"""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
import pytest
from openapi_check import VIOLATIONS, check_response

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin" / "openft.js"
NODE = shutil.which("node") or "node"

BACKEND = "postgres-s3" if os.environ.get("OPENFT_TEST_BACKEND") == "postgres-s3" else "embedded"
S3_CREDS = {"access_key": "test", "secret_key": "test", "region": "us-east-1"}
START_TIMEOUT_S = 120.0  # as test/helpers/server.ts: a start has been seen to take 70 s on a shared machine
URL_RE = re.compile(r'"url":"(http://[^"]+)"')


def _suffix() -> str:
    return secrets.token_hex(6)


def _psql_binary() -> str:
    """The newest /usr/lib/postgresql/*/bin/psql, else psql from PATH."""

    def version(p: str) -> List[int]:
        return [int(x) for x in re.findall(r"\d+", p.split("/usr/lib/postgresql/")[1].split("/")[0])]

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), key=version, reverse=True)
    found = [p for p in found if os.access(p, os.X_OK)]
    if found:
        return found[0]
    on_path = shutil.which("psql")
    if on_path:
        return on_path
    raise RuntimeError("postgres-s3 backend needs psql (PostgreSQL client binaries)")


def _psql(admin_url: str, sql: str) -> None:
    subprocess.run(
        [_psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _create_database(admin_url: str) -> str:
    name = f"openft_t_{_suffix()}"
    _psql(admin_url, f"create database {name}")
    u = urlsplit(admin_url)
    return urlunsplit((u.scheme, u.netloc, f"/{name}", u.query, u.fragment))


def _drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _psql(admin_url, f"drop database if exists {name} with (force)")


def _s3_client(endpoint: str):
    import boto3  # installed with moto[server]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_CREDS["region"],
        aws_access_key_id=S3_CREDS["access_key"],
        aws_secret_access_key=S3_CREDS["secret_key"],
    )


class TestServer:
    """One `openft serve` process on a free loopback port."""

    __test__ = False  # not a test class

    def __init__(self, env: Optional[Dict[str, str]] = None, projects: Sequence[str] = (), admin: bool = False) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="openft-pytest-")
        self.api_key = f"sk-test-{_suffix()}{_suffix()}"
        self.database_url: Optional[str] = None
        self.s3_endpoint: Optional[str] = None
        self.s3_bucket: Optional[str] = None
        self._admin_url = os.environ.get("OPENFT_TEST_DATABASE_URL")
        self._log: List[str] = []
        self._log_lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._readers: List[threading.Thread] = []
        self.url = ""
        self.project_keys: Dict[str, str] = {}
        self._violations_before = len(VIOLATIONS)
        self.admin_key: Optional[str] = None
        self.env: Dict[str, str] = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", tempfile.gettempdir()),
            "OPENFT_API_KEY": self.api_key,
            "OPENFT_DATA_DIR": self.data_dir,
            "OPENFT_MODELS_DIR": os.path.join(self.data_dir, "models"),
            "OPENFT_LOG_LEVEL": "info",
            # No worker claims jobs, so a job stays `queued` until the test moves it (as in server.ts).
            "OPENFT_EMBEDDED_WORKER": "false",
        }
        try:
            if BACKEND == "postgres-s3":
                endpoint = os.environ.get("OPENFT_TEST_S3_ENDPOINT")
                if not self._admin_url or not endpoint:
                    raise RuntimeError("postgres-s3 backend needs OPENFT_TEST_DATABASE_URL and OPENFT_TEST_S3_ENDPOINT")
                self.database_url = _create_database(self._admin_url)
                self.s3_endpoint = endpoint
                self.s3_bucket = f"openft-t-{_suffix()}"
                self.env.update(
                    {
                        "DATABASE_URL": self.database_url,
                        "OPENFT_S3_ENDPOINT": endpoint,
                        "OPENFT_S3_BUCKET": self.s3_bucket,
                        "OPENFT_S3_REGION": S3_CREDS["region"],
                        "OPENFT_S3_ACCESS_KEY_ID": S3_CREDS["access_key"],
                        "OPENFT_S3_SECRET_ACCESS_KEY": S3_CREDS["secret_key"],
                        "OPENFT_S3_FORCE_PATH_STYLE": "true",
                    }
                )
            self.env.update(env or {})
            # PGlite admits one process at a time: keys are made before the server starts.
            for name in projects:
                self.project_keys[name] = self.cli("keys", "create", "--project", name).strip()
            if admin:
                self.admin_key = self.cli("keys", "create", "--admin").strip()
            self._launch()
        except BaseException:
            self.dispose()
            raise

    # -- process -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def log(self) -> str:
        with self._log_lock:
            return "".join(self._log)

    def cli(self, *args: str) -> str:
        """Runs an `openft` subcommand against the same storage and returns its stdout."""
        p = subprocess.run([NODE, str(BIN), *args], env=self.env, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"openft {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p.stdout

    def _drain(self, stream) -> None:
        for chunk in iter(stream.readline, ""):
            with self._log_lock:
                self._log.append(chunk)
        stream.close()

    def _launch(self) -> None:
        with self._log_lock:
            start = len(self._log)
        proc = subprocess.Popen(
            [NODE, str(BIN), "serve", "--port", "0", "--host", "127.0.0.1"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        self._proc = proc
        self._readers = [threading.Thread(target=self._drain, args=(s,), daemon=True) for s in (proc.stdout, proc.stderr)]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with self._log_lock:
                text = "".join(self._log[start:])
            m = URL_RE.search(text)
            if m and "openft listening on" in text:
                self.url = m.group(1)
                return
            if proc.poll() is not None:
                time.sleep(0.1)  # let the readers catch the last lines
                raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"server did not start in {START_TIMEOUT_S:.0f}s:\n{self.log}")

    def startup_record(self) -> dict:
        """The pino line that announced the listening server."""
        for line in self.log.splitlines():
            if "openft listening on" in line:
                return json.loads(line)
        raise AssertionError(f"no 'openft listening on' line in:\n{self.log}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 20 s). Raises if the server had already died on its own."""
        p = self._proc
        if p is None:
            return
        died = p.poll()
        if died is None:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=20)
        for t in self._readers:
            t.join(timeout=5)
        self._proc = None
        if died is not None:
            raise RuntimeError(f"the server died on its own (exit {died}) before it was stopped:\n{self.log[-8000:]}")

    def dispose(self) -> None:
        """stop() and remove the data dir, the database and the bucket."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            try:
                if self._admin_url and self.database_url:
                    _drop_database(self._admin_url, self.database_url)
                    self.database_url = None
            finally:
                if self.s3_endpoint and self.s3_bucket:
                    self._remove_bucket()
                    self.s3_bucket = None
        seen = VIOLATIONS[self._violations_before:]
        if seen:
            raise AssertionError("responses that do not match openapi.yaml:\n" + "\n".join(seen))

    def _remove_bucket(self) -> None:
        s3 = _s3_client(self.s3_endpoint)
        try:
            s3.head_bucket(Bucket=self.s3_bucket)
        except s3.exceptions.ClientError:
            return  # never created (the server did not get that far)
        for up in s3.list_multipart_uploads(Bucket=self.s3_bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=self.s3_bucket, Key=up["Key"], UploadId=up["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.s3_bucket):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=self.s3_bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=self.s3_bucket)

    # -- clients and storage ----------------------------------------------------------------

    def client(self, api_key: Optional[str] = None, **kwargs) -> openai.OpenAI:
        """An official SDK client with retries off (so a retried request cannot hide a bug), whose
        every response is checked against openapi.yaml (openapi_check.py)."""
        if "http_client" not in kwargs:
            kwargs["http_client"] = httpx2.Client(event_hooks={"response": [check_response]})
        return openai.OpenAI(
            api_key=api_key or self.api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=120,
            **kwargs,
        )

    def visible_blobs(self) -> List[str]:
        """Keys of complete, visible blobs, looked up in storage directly (not through the API)."""
        if self.s3_bucket:
            s3 = _s3_client(self.s3_endpoint)
            keys: List[str] = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.s3_bucket):
                keys.extend(o["Key"] for o in page.get("Contents", []))
            return sorted(keys)
        root = Path(self.data_dir) / "blobs"
        if not root.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith(".partial")
        )

    def partial_blobs(self) -> List[str]:
        """Partial uploads left behind (incomplete multipart uploads, or .partial files)."""
        if self.s3_bucket:
            s3 = _s3_client(self.s3_endpoint)
            return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=self.s3_bucket).get("Uploads", []))
        partial = Path(self.data_dir) / "blobs" / ".partial"
        if not partial.is_dir():
            return []
        return sorted(p.name for p in partial.iterdir())


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., TestServer]]:
    """Factory: start_server(env={...}, projects=[...], admin=False). Every server it starts is disposed of at the
    end of the module."""
    servers: List[TestServer] = []

    def start(env: Optional[Dict[str, str]] = None, projects: Sequence[str] = (), admin: bool = False) -> TestServer:
        s = TestServer(env=env, projects=projects, admin=admin)
        servers.append(s)
        return s

    yield start
    errors: List[BaseException] = []
    for s in reversed(servers):
        try:
            s.dispose()
        except BaseException as e:  # dispose every server, then report
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def server(start_server) -> TestServer:
    """The module's server, with keys for two more projects: "other" and "lister"."""
    return start_server(projects=["other", "lister"])


@pytest.fixture(autouse=True)
def _server_stays_up(request):
    """A test that uses the module's server fails, with the server's log, if the server dies during it;
    later tests say the server is gone instead of failing with bare connection errors."""
    if "server" not in request.fixturenames:
        yield
        return
    s: TestServer = request.getfixturevalue("server")
    if s._proc is None or s._proc.poll() is not None:
        pytest.fail(f"the module's server died during an earlier test ({getattr(s, 'died_during', '?')})", pytrace=False)
    yield
    if s._proc is not None and s._proc.poll() is not None:
        s.died_during = request.node.nodeid
        time.sleep(0.1)  # let the readers catch the last lines
        pytest.fail(f"the server died during this test (exit {s._proc.returncode}):\n{s.log[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def client(server: TestServer) -> openai.OpenAI:
    """Project A: the default project (OPENFT_API_KEY)."""
    return server.client()


@pytest.fixture(scope="module")
def other(server: TestServer) -> openai.OpenAI:
    """Project B."""
    return server.client(server.project_keys["other"])
