"""Faults a laptop or a node really sees: kill -9 of the server or of an engine, a full disk, a
platform that stops answering. Each test checks the user-visible outcome (exit code, message)
and the state left behind (the SQLite catalog read directly, files, processes).

test_downloads.py and test_serving.py already cover a resumed download's bytes and a restored
deployment's port; these tests go further: a second `pull` racing the resumed download, the
catalog rows themselves, the 5 s the issue gives for noticing a dead engine, `run` (not `serve`)
redeploying, two deployments restored with no orphan or duplicate engine, and ENOSPC mid-download.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import loopback
import pytest
from conftest import GEMMA_REPO, TINY_REPO, LocalServer, Watched, make_server, wait_for
from fakehub import FakeHub
from reliability.support import (
    ACTIVE,
    GEMMA_LOCAL,
    GEMMA_SHA,
    GEMMA_SIZE,
    MB,
    alive,
    catalog,
    engine_pids,
    integrity,
    kamiwaza,
    one_error,
    record,
    silent_listener,
    stopped,
)

# The tests marked `timing` assert a bound in time: `make test` runs them after the others, alone.

Q6 = "gemma-3-270m-it-Q6_K.gguf"  # what `pull GEMMA_REPO` fetches (default quantization q6_k)


def _partials(home: Path) -> list[Path]:
    return list((home / "models").rglob("*.incomplete"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def _deployment(srv: LocalServer, dep_id: str) -> dict:
    r = loopback.get(f"{srv.url}/serving/deployment/{dep_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def fresh(hub: FakeHub, tmp_path: Path) -> Iterator[LocalServer]:
    """A server of this test's own: these tests kill it."""
    srv = make_server(tmp_path / "home", hub.url)
    srv.start()
    yield srv
    hub.rate_limit = None
    srv.stop()


# --- kill -9 of the server mid-download ---------------------------------------------------------------


def test_kill_9_mid_download_then_restart_resumes_verifies_and_keeps_one_row_per_file(
    fresh: LocalServer, hub: FakeHub
) -> None:
    hub.rate_limit = 40 * MB
    seen = len(hub.requests)
    pull = fresh.popen("pull", GEMMA_REPO)
    partial = wait_for(lambda: next(iter(_partials(fresh.home)), None), what="a partial file")
    wait_for(lambda: partial.stat().st_size > 40 * MB, what="40 MB on disk")

    os.kill(fresh.pid(), signal.SIGKILL)
    _, err = pull.communicate(timeout=30)
    assert pull.returncode == 3, err
    kept = partial.stat().st_size

    # What the dead server left: one model, one file row still marked downloading, nothing final.
    cat = catalog(fresh.home)
    [model] = [m for m in cat["models"] if m["repo_modelId"] == GEMMA_REPO]
    [row] = cat["model_files"]
    assert (row["name"], row["is_downloading"], row["storage_location"]) == (Q6, 1, None)
    assert not (partial.parent / Q6).exists()

    hub.rate_limit = 0  # the tail is paused until a second pull has joined it, then comes at full speed
    fresh.start()
    # Users are told to "run the same command to watch": it must join the resumed download, not
    # register the model or its file a second time.
    watch = Watched(fresh.popen("pull", GEMMA_REPO))
    try:
        watch.wait_for_stderr("Watching the download of")
    finally:
        hub.rate_limit = None
    _, err = watch.communicate(timeout=180)
    assert watch.returncode == 0, err
    assert "Watching the download of" in err and "Download complete" in err

    cat = catalog(fresh.home)
    assert [m["id"] for m in cat["models"] if m["repo_modelId"] == GEMMA_REPO] == [model["id"]]
    [row] = cat["model_files"]
    assert row["m_id"] == model["id"] and row["name"] == Q6
    assert (row["is_downloading"], row["download_error"], row["checksum"]) == (0, None, GEMMA_SHA)
    assert row["size"] == GEMMA_SIZE
    assert len([c for c in cat["model_configs"] if c["m_id"] == model["id"] and c["default"]]) == 1
    assert integrity(fresh.home) == "ok"

    blob = Path(row["storage_location"])
    assert blob.parent.name == model["id"] and blob.stat().st_size == GEMMA_SIZE
    assert _sha256(blob) == GEMMA_SHA  # the file verifies on its own, not only in the catalog
    assert _partials(fresh.home) == []

    gets = [h for (m, p, h) in hub.requests[seen:] if m == "GET" and p.endswith("/" + Q6)]
    assert gets and gets[-1].get("range"), "the restarted server fetched the file without a Range"
    resumed_from = int(gets[-1]["range"].removeprefix("bytes=").split("-")[0])
    assert resumed_from == kept  # exactly where the kill left it: not from zero, no gap, no overlap
    record(
        "download_resume",
        killed_at_bytes=kept,
        resumed_from=resumed_from,
        file_bytes=GEMMA_SIZE,
        rows=len(cat["model_files"]),
    )


# --- kill -9 of an engine -----------------------------------------------------------------------------


@pytest.fixture
def gemma_server(fresh: LocalServer, gemma_path: Path) -> LocalServer:
    r = fresh.cli("pull", str(gemma_path))
    assert r.exit_code == 0, r.stderr
    return fresh


@pytest.mark.timing
def test_engine_killed_is_failed_within_5_s_and_run_redeploys(gemma_server: LocalServer) -> None:
    srv = gemma_server
    r = srv.cli("serve", GEMMA_LOCAL, "--json")
    assert r.exit_code == 0, r.stderr
    old = json.loads(r.stdout)["id"]
    engine = _deployment(srv, old)["pid"]
    assert engine_pids(srv.home) == [engine]

    os.kill(engine, signal.SIGKILL)
    killed_at = time.monotonic()
    failed = wait_for(
        lambda: (d := _deployment(srv, old))["status"] == "FAILED" and d, timeout=5, what="FAILED within 5 s"
    )
    record("engine_killed", failed_after_s=round(time.monotonic() - killed_at, 2))
    assert failed["last_error_code"] == "CONTAINER_EXITED" and "signal 9" in failed["last_error_message"]

    r = srv.cli("run", GEMMA_LOCAL, "hi", "--max-tokens", "4")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip(), "the one-shot reply is empty"
    assert "🚀 Deploying" in r.stderr and "✨ Deployment ready!" in r.stderr

    deployments = {d["id"]: d for d in catalog(srv.home)["deployments"]}
    active = [d for d in deployments.values() if d["status"] in ACTIVE]
    assert len(active) == 1 and active[0]["id"] != old and active[0]["status"] == "DEPLOYED"
    assert deployments[old]["status"] == "FAILED"
    assert engine_pids(srv.home) == [active[0]["pid"]]  # the new engine and nothing else


# --- kill -9 of the server with deployments ---------------------------------------------------------


def test_kill_9_of_the_server_restores_every_deployment_with_zero_orphans(gemma_server: LocalServer) -> None:
    srv = gemma_server
    [model] = catalog(srv.home)["models"]
    ids = []
    for _ in range(2):  # the API (unlike `serve`) makes a new deployment each time
        r = loopback.post(f"{srv.url}/serving/deploy_model", json={"m_id": model["id"]}, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.json())
    for dep_id in ids:
        wait_for(lambda d=dep_id: _deployment(srv, d)["status"] == "DEPLOYED", timeout=120, what="DEPLOYED")
    before = engine_pids(srv.home)
    assert before == sorted(_deployment(srv, d)["pid"] for d in ids) and len(before) == 2

    os.kill(srv.pid(), signal.SIGKILL)
    wait_for(lambda: engine_pids(srv.home) == [], timeout=10, what="the engines to die with the server")

    srv.start()
    for dep_id in ids:
        wait_for(lambda d=dep_id: _deployment(srv, d)["status"] == "DEPLOYED", timeout=120, what="restored")
    rows = {d["id"]: d for d in catalog(srv.home)["deployments"]}
    assert sorted(rows) == sorted(ids), "restoring must not add deployments"
    after = engine_pids(srv.home)
    assert after == sorted(rows[d]["pid"] for d in ids) and len(after) == 2  # one engine each, no orphans
    assert not set(after) & set(before)
    record(
        "server_killed",
        deployments=len(ids),
        restored=len(after),
        orphans=len(set(after) - {rows[d]["pid"] for d in ids}),
    )
    for dep_id in ids:
        body = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        resp = loopback.post(
            f"{srv.url.removesuffix('/api')}/runtime/models/{dep_id}/v1/chat/completions", json=body, timeout=60
        )
        assert resp.status_code == 200 and resp.json()["choices"], resp.text

    srv.stop()
    assert engine_pids(srv.home) == []


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(hub: FakeHub, tmp_path: Path) -> Iterator[LocalServer]:
    """A server whose models directory is a tmpfs just big enough for the download to be accepted.

    The server refuses up front (507) when the download plus a 64 MiB reserve does not fit, so the
    tmpfs must hold 253 MB + 64 MiB; the test then fills it while the download runs, to hit ENOSPC
    *during* the download."""
    home = tmp_path / "home"
    models = home / "models"
    models.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=340m,mode=0755", "tmpfs", str(models)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    srv = make_server(home, hub.url)
    try:
        srv.start()
        yield srv
    finally:
        hub.rate_limit = None
        srv.stop()
        if subprocess.run(["umount", str(models)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(models)], capture_output=True)


def _fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system says ENOSPC; return the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (4 * MB, 4096):
            block = b"\0" * size
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written


def test_disk_full_during_a_download(small_disk: LocalServer, hub: FakeHub) -> None:
    srv = small_disk
    models = srv.home / "models"
    hub.rate_limit = 10 * MB
    pull = srv.popen("pull", GEMMA_REPO)
    partial = wait_for(lambda: next(iter(_partials(srv.home)), None), what="the download to start")
    wait_for(lambda: partial.stat().st_size > 2 * MB, what="bytes on disk")
    filler = models / "filler.bin"
    assert _fill(filler) > 0

    _, err = pull.communicate(timeout=60)
    assert pull.returncode == 1, err
    line = one_error(err, allow_progress=True)
    assert "disk full" in line.lower() and Q6 in line

    assert _partials(srv.home) == []  # the partial file was removed
    leftovers = [p for p in models.rglob("*") if p.is_file() and p != filler]
    assert leftovers == []
    cat = catalog(srv.home)
    assert integrity(srv.home) == "ok"
    mine = [m for m in cat["models"] if m["repo_modelId"] == GEMMA_REPO]
    if mine:  # allowed: the model stays registered, but never as downloaded
        files = [f for f in cat["model_files"] if f["m_id"] == mine[0]["id"]]
        assert files and all(f["storage_location"] is None and not f["is_downloading"] for f in files)
        listed = json.loads(srv.cli("list", "--json").stdout)
        assert all(m["status"] != "ready" for m in listed if m["repo_id"] == GEMMA_REPO)
    else:
        assert cat["model_files"] == [] and cat["model_configs"] == []

    # Consistent means recoverable: with the space back, the same command just works.
    filler.unlink()
    hub.rate_limit = None
    r = srv.cli("pull", GEMMA_REPO)
    assert r.exit_code == 0, r.stderr
    cat = catalog(srv.home)
    [model] = [m for m in cat["models"] if m["repo_modelId"] == GEMMA_REPO]
    [row] = cat["model_files"]
    assert row["m_id"] == model["id"] and row["checksum"] == GEMMA_SHA and row["storage_location"]
    assert Path(row["storage_location"]).stat().st_size == GEMMA_SIZE


# --- a platform that stops answering ------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent_listener() as port:
        yield port


def _assert_stopped_answering(r: subprocess.CompletedProcess[str], url: str) -> None:
    assert r.returncode == 3, r.stderr
    assert r.stdout == ""
    line = one_error(r.stderr, allow_progress=True)
    assert "stopped answering" in line and url in line
    assert "KAMIWAZA_TIMEOUT" in r.stderr.splitlines()[-1]


def test_a_platform_that_never_answers_is_exit_3_not_a_hang(tmp_path: Path, silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/api"
    env = {**make_server(tmp_path / "home", None).env, "KAMIWAZA_TIMEOUT": "2"}  # its env only: never started
    r = kamiwaza(env, "--url", url, "list", timeout=15)  # TimeoutExpired (a hang) fails the test
    _assert_stopped_answering(r, url)


def test_a_stopped_local_server_is_exit_3_then_works_again(fresh: LocalServer) -> None:
    env = {**fresh.env, "KAMIWAZA_BASE_URL": fresh.url, "KAMIWAZA_TIMEOUT": "2"}
    with stopped(fresh.pid()):
        r = kamiwaza(env, "list", timeout=15)
    _assert_stopped_answering(r, fresh.url)
    r = kamiwaza(env, "list", "--json", timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr


def test_a_server_that_stops_answering_mid_pull_is_exit_3(fresh: LocalServer, hub: FakeHub) -> None:
    """`pull` is a long command (it polls the platform): the server freezing half-way is caught too."""
    hub.rate_limit = 2000  # the tiny file then takes ~15 s
    env = {**fresh.env, "KAMIWAZA_BASE_URL": fresh.url, "KAMIWAZA_TIMEOUT": "2"}
    pull = subprocess.Popen(
        [sys.executable, "-m", "kamiwaza_cli", "pull", f"{TINY_REPO}:q8_0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = Watched(pull)
    try:
        wait_for(lambda: _partials(fresh.home), what="the download to start")
        wait_for(lambda: any(r["is_downloading"] for r in catalog(fresh.home)["model_files"]), what="a download row")
        watch.wait_for_stderr("Downloading")  # told the user: the CLI is in its polling loop (every 0.5 s)
        with stopped(fresh.pid()):
            out, err = watch.communicate(timeout=15)
    finally:
        if pull.poll() is None:
            pull.kill()
            watch.communicate(timeout=15)
    _assert_stopped_answering(subprocess.CompletedProcess(pull.args, pull.returncode, out, err), fresh.url)
    assert alive(fresh.pid())
    hub.rate_limit = None
    r = fresh.cli("pull", "--cancel", TINY_REPO)
    assert r.exit_code in (0, 4), r.stderr  # 4: it already finished once the hub was unthrottled
