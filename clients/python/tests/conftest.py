"""A real ``sluice serve`` on a fresh database for the tests.

Environment:

- ``SLUICE_BIN``: the ``sluice`` binary (default: the repository's
  ``target/debug/sluice``, as ``cargo build`` leaves it);
- ``SLUICE_TEST_POSTGRES``: the PostgreSQL server, as a URL without a
  database (default ``postgres://postgres@127.0.0.1:5432``); the tests make
  a database of their own on it (``psql`` must be on the PATH) and drop it
  after.

One server serves the whole session; each test gets a stream, a consumer
and a key of its own, so tests do not see each other's tasks.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sluice_client import generate_key, public_key_b64

REPO = Path(__file__).resolve().parents[3]
SLUICE_BIN = os.environ.get("SLUICE_BIN", str(REPO / "target" / "debug" / "sluice"))
POSTGRES = os.environ.get(
    "SLUICE_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432"
).rstrip("/")

T = TypeVar("T")


class Sluice:
    """The ``sluice`` command and SQL on the test database: how the tests
    set things up and look at what the gateway stored."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def cli(self, *args: str) -> str:
        """Runs ``sluice ARGS`` and returns its stdout; fails the test with
        its stderr if it fails."""
        done = subprocess.run(
            [SLUICE_BIN, "--database-url", self.database_url, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"sluice {' '.join(args)} failed ({done.returncode}): {done.stderr}"
            )
        return done.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli("--json", *args))

    def tasks(self, stream: str, consumer: str) -> dict[int, dict[str, Any]]:
        """The consumer's tasks by event id, as ``sluice tasks list`` has them."""
        page = self.cli_json("tasks", "list", stream, consumer, "--limit", "1000")
        return {int(task["event_id"]): task for task in page["tasks"]}

    def events(self, stream: str) -> list[dict[str, Any]]:
        """The stream's events, as the database has them, oldest first."""
        rows = self.sql(
            "SELECT json_build_object('id', e.id, 'subject', e.subject,"
            " 'payload', e.payload, 'metadata', e.metadata, 'key', e.key,"
            " 'priority', e.priority, 'deliver_at', e.deliver_at)"
            " FROM sluice.events e JOIN sluice.streams s ON s.id = e.stream_id"
            f" WHERE s.name = '{stream}' ORDER BY e.id"
        )
        return [json.loads(row[0]) for row in rows]

    def sql(self, query: str) -> list[list[str]]:
        """Rows of a query, as text fields."""
        return psql(self.database_url, query)


def psql(database_url: str, query: str) -> list[list[str]]:
    # Unaligned, tuples only, tab-separated; no ~/.psqlrc; stop at an error.
    options = ["-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    done = subprocess.run(
        ["psql", database_url, *options, "-c", query],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise AssertionError(f"psql failed: {done.stderr}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


@dataclass
class Server:
    """The running ``sluice serve``."""

    url: str
    sluice: Sluice


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(SLUICE_BIN).is_file():
        pytest.fail(
            f"no sluice binary at {SLUICE_BIN}: build it (cargo build) or set SLUICE_BIN"
        )
    database = f"sluice_py_{uuid.uuid4().hex[:12]}"
    psql(f"{POSTGRES}/postgres", f"CREATE DATABASE {database}")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    process = None
    try:
        sluice = Sluice(f"{POSTGRES}/{database}")
        sluice.cli("migrate", "up")
        with open(log_path, "wb") as log:
            serve = [SLUICE_BIN, "--database-url", sluice.database_url, "serve"]
            process = subprocess.Popen(
                [*serve, "--listen", "127.0.0.1:0"],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        yield Server(url=_gateway_url(process, log_path), sluice=sluice)
    finally:
        if process is not None:
            _stop(process)
        psql(f"{POSTGRES}/postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _gateway_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    """The gateway's address, from the first line ``sluice serve`` prints:
    ``serving the dashboard at http://ADDR/, the gateway at ws://ADDR/gateway, ...``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline().decode() if ready else ""
    for word in line.replace(",", " ").split():
        if word.startswith("ws://"):
            return word
    raise AssertionError(
        f"sluice serve did not print its gateway address: {line!r}; log: {log_path.read_text()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops ``sluice serve`` as Ctrl-C does, or kills it if that takes too long."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


@dataclass
class Setup:
    """What one test works with: a stream, its consumer (3 attempts, quick
    backoff) and a key that may publish to the stream and take its tasks."""

    url: str
    sluice: Sluice
    stream: str
    consumer: str
    key_name: str
    key: Ed25519PrivateKey

    def add_key(self, *permissions: str) -> tuple[str, Ed25519PrivateKey]:
        """Another key, with its permissions as ``gateway key add`` flags."""
        return register_key(self.sluice, *permissions)


def register_key(sluice: Sluice, *permissions: str) -> tuple[str, Ed25519PrivateKey]:
    """A new key pair, registered under a new name: the name and the private key."""
    key = generate_key()
    name = f"key_{uuid.uuid4().hex[:10]}"
    sluice.cli(
        "gateway", "key", "add", name, "--public-key", public_key_b64(key), *permissions
    )
    return name, key


@pytest.fixture
def setup(server: Server) -> Setup:
    stream = f"orders_{uuid.uuid4().hex[:10]}"
    sluice = server.sluice
    sluice.cli("stream", "create", stream)
    retries = ["--max-attempts", "3", "--backoff", "100ms,1s"]
    sluice.cli(
        "consumer", "create", stream, "billing", "--start", "beginning", *retries
    )
    name, key = register_key(
        sluice, "--publish", stream, "--consume", f"{stream}/billing"
    )
    return Setup(server.url, sluice, stream, "billing", name, key)


async def eventually(check: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """Polls ``check`` until it returns something true, and returns that; fails
    with ``what`` and the last value after ``timeout`` seconds. The check runs
    in a thread (it runs commands), so that the client's reader keeps reading
    meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {result!r})")
        await asyncio.sleep(0.1)
