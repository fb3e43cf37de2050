"""Load on one local server: 1000 mixed API calls from 32 concurrent clients, 4 concurrent chats on
one deployment, and the server's memory and open files across the run.

The API calls are the ones the CLI and the SDK make all the time (listings, one model, its
configs, the deployments, search, ping); every answer is checked, not only its status.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import loopback
import pytest
from conftest import LocalServer
from fakehub import FakeHub
from reliability.support import GEMMA_LOCAL, fd_count, record, rss_kb, settle, socket_inodes, tcp_sockets

CALLS = 1000
CLIENTS = 32
WARMUP = 200


@dataclass
class World:
    model_id: str
    file_id: str
    deployment_id: str
    endpoint: str


@pytest.fixture(scope="module")
def world(server: LocalServer, gemma_path: Path) -> World:
    r = server.cli("pull", str(gemma_path))
    assert r.exit_code == 0, r.stderr
    r = server.cli("serve", GEMMA_LOCAL, "--json")
    assert r.exit_code == 0, r.stderr
    dep = json.loads(r.stdout)
    model = loopback.get(f"{server.url}/models/{dep['model_id']}", timeout=30).json()
    return World(model["id"], model["m_files"][0]["id"], dep["id"], dep["endpoint"])


def _requests(w: World) -> list[tuple[str, str, dict | None, object]]:
    """(method, path, json body, check) for each kind of call; check(response json) -> bool."""
    return [
        ("GET", "/models/", None, lambda j: any(m["id"] == w.model_id for m in j)),
        ("GET", f"/models/{w.model_id}", None, lambda j: j["id"] == w.model_id and j["m_files"][0]["id"] == w.file_id),
        ("GET", "/model_files/", None, lambda j: any(f["id"] == w.file_id for f in j)),
        ("GET", "/serving/deployments", None, lambda j: any(d["id"] == w.deployment_id for d in j)),
        ("POST", "/models/search/", {"query": GEMMA_LOCAL}, lambda j: any(r["id"] == w.model_id for r in j["results"])),
        ("GET", "/ping", None, lambda j: j["status"] == "pong" and j["server"] == "kamiwaza-local"),
        ("GET", f"/model_configs/?model_id={w.model_id}", None, lambda j: len(j) >= 1 and j[0]["m_id"] == w.model_id),
    ]


def _hammer(server: LocalServer, w: World, calls: int) -> list[str]:
    """``calls`` requests over CLIENTS threads, each with its own keep-alive client; returns the errors."""
    kinds = _requests(w)
    plan = list(itertools.islice(itertools.cycle(kinds), calls))
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            # No TLS set up (plain HTTP on loopback): loading the CA bundle costs 20 ms a client.
            local.client = httpx.Client(base_url=server.url, timeout=60, verify=False)
            with lock:
                clients.append(local.client)
        return local.client

    def one(call: tuple[str, str, dict | None, object]) -> str | None:
        method, path, body, check = call
        try:
            resp = client().request(method, path, json=body)
            if resp.status_code != 200:
                return f"{method} {path}: HTTP {resp.status_code} {resp.text[:200]}"
            if not check(resp.json()):  # type: ignore[operator]
                return f"{method} {path}: unexpected body {resp.text[:200]}"
        except Exception as exc:  # noqa: BLE001 - every failure is an error to report
            return f"{method} {path}: {type(exc).__name__}: {exc}"
        return None

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(one, plan))
    finally:
        for c in clients:
            c.close()
    assert len(results) == calls
    return [r for r in results if r is not None]


@dataclass
class Run:
    errors: list[str]
    warmup_errors: list[str]
    rss_before: int
    rss_after: int
    fds_before: int  # every open fd but the idle connections of the hub client's pool (see below)
    fds_after: int
    hub_pool_after: int


def _fds(pid: int, hub_port: int) -> tuple[int, int]:
    """(open fds other than connections to the hub, connections to the hub).

    Search asks the hub through huggingface_hub's one shared httpx client, which keeps up to 20 idle
    keep-alive connections; how many depends on how many searches happened to overlap, so they are
    counted apart (and bounded) rather than in the leak check."""
    sockets = tcp_sockets()
    hub = sum(1 for i in socket_inodes(pid) if i in sockets and sockets[i][3] == hub_port)
    return fd_count(pid) - hub, hub


@pytest.fixture(scope="module")
def load_run(server: LocalServer, world: World, hub: FakeHub) -> Run:
    pid = server.pid()
    hub_port = int(hub.url.rsplit(":", 1)[1])
    # The warm-up lets the server reach its steady state first: the threadpool (40 workers), httpx and
    # SQLite caches, first-use imports. Growth is measured from there, with the clients hung up.
    warmup_errors = _hammer(server, world, WARMUP)
    fds_before = settle(lambda: _fds(pid, hub_port)[0])
    rss_before = rss_kb(pid)
    errors = _hammer(server, world, CALLS)
    fds_after = settle(lambda: _fds(pid, hub_port)[0])
    rss_after = rss_kb(pid)
    record(
        "load",
        calls=CALLS,
        clients=CLIENTS,
        errors=len(errors),
        rss_growth_mb=round((rss_after - rss_before) / 1024, 1),
        fd_growth=fds_after - fds_before,
    )
    return Run(errors, warmup_errors, rss_before, rss_after, fds_before, fds_after, _fds(pid, hub_port)[1])


def test_1000_mixed_api_calls_at_32_concurrent_clients_with_0_errors(load_run: Run) -> None:
    assert load_run.warmup_errors == []
    assert load_run.errors == [], f"{len(load_run.errors)} errors, first: {load_run.errors[:5]}"


def test_server_memory_and_open_files_do_not_grow(load_run: Run) -> None:
    # Bounds: 1000 calls of a few KB each would add tens of MB if responses or connections were kept;
    # a leak-free CPython server still moves by a few MB (allocator arenas, SQLite page cache), so
    # < 30 MB separates the two. Every client hung up before each reading, so a leaked socket,
    # SQLite handle or file shows as an fd; 5 leaves room for a lazily opened log or /dev/urandom.
    grew_mb = (load_run.rss_after - load_run.rss_before) / 1024
    assert grew_mb < 30, f"RSS grew {grew_mb:.1f} MB ({load_run.rss_before} -> {load_run.rss_after} kB)"
    assert load_run.fds_after - load_run.fds_before <= 5, (load_run.fds_before, load_run.fds_after)
    # The hub client's pool is a cache, not a leak, as long as it stays within httpx's keep-alive limit.
    assert load_run.hub_pool_after <= 20, load_run.hub_pool_after


def test_4_concurrent_chats_on_one_deployment_all_complete(world: World) -> None:
    import openai

    replies: dict[int, tuple[str, str | None]] = {}
    errors: list[BaseException] = []

    def chat(i: int) -> None:
        try:
            client = openai.OpenAI(base_url=world.endpoint, api_key="local", max_retries=0, timeout=170)
            text, finish = "", None
            stream = client.chat.completions.create(
                model="any",
                messages=[{"role": "user", "content": f"Count to {i + 3}."}],
                stream=True,
                max_tokens=16,
                temperature=0,
            )
            for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
            replies[i] = (text, finish)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    record("chats", started=4, completed=len(replies), seconds=round(time.monotonic() - started, 1))
    assert errors == []
    assert sorted(replies) == [0, 1, 2, 3]
    for i, (text, finish) in replies.items():
        assert text.strip(), f"chat {i} got an empty reply"
        assert finish in ("stop", "length"), f"chat {i} ended without finishing (finish_reason {finish!r})"
