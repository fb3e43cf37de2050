"""Downloads in the local server: resume after kill -9, one download for two pulls, cancel, detach.

The real 253 MB model is served by the loopback hub under a rate limit, so each
download lasts long enough to be interrupted at a known point.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GEMMA_REPO, LocalServer, Watched, wait_for
from fakehub import FakeHub

GEMMA_SIZE = 253_113_024
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MB = 1 << 20


@pytest.fixture
def throttled(hub: FakeHub) -> Iterator[FakeHub]:
    hub.rate_limit = 40 * MB
    yield hub
    hub.rate_limit = None


def _partials(server: LocalServer) -> list[Path]:
    return list((server.home / "models").rglob("*.incomplete"))


def _model(server: LocalServer, repo: str) -> dict | None:
    r = server.cli("list", "--json")
    assert r.exit_code == 0, r.stderr
    return next((m for m in json.loads(r.stdout) if m["repo_id"] == repo), None)


def _gets(hub: FakeHub, filename: str) -> list[dict]:
    return [h for (method, path, h) in list(hub.requests) if method == "GET" and path.endswith("/" + filename)]


def test_resume_after_kill_9(server: LocalServer, throttled: FakeHub) -> None:
    name = "gemma-3-270m-it-Q6_K.gguf"
    pull = server.popen("pull", GEMMA_REPO)
    partial = wait_for(lambda: next(iter(_partials(server)), None), what="a partial file")
    wait_for(lambda: partial.stat().st_size > 60 * MB, what="60 MB on disk")

    os.kill(server.pid(), signal.SIGKILL)
    _, err = pull.communicate(timeout=30)
    assert pull.returncode == 3, err  # the platform went away under the CLI: exit 3, not a hang
    kept = partial.stat().st_size
    assert kept > 60 * MB  # the bytes already on disk survived the kill

    served_before = throttled.bytes_served
    throttled.rate_limit = None  # the throttle only made room for the kill; the tail may come at full speed
    server.start()  # the restarted server resumes the download by itself
    wait_for(
        lambda: (_model(server, GEMMA_REPO) or {}).get("status") == "ready",
        timeout=120,
        what="the resumed download to finish",
    )
    refetched = throttled.bytes_served - served_before
    assert refetched <= GEMMA_SIZE - kept + 8 * MB  # only the missing tail came over the wire
    assert _gets(throttled, name)[-1]["range"].startswith("bytes=")

    shown = json.loads(server.cli("show", GEMMA_REPO, "--json").stdout)
    assert [(f["name"], f["sha256"], f["status"]) for f in shown["files"]] == [(name, GEMMA_SHA, "downloaded")]
    assert _partials(server) == []
    server.cli("rm", GEMMA_REPO)


def test_two_pulls_share_one_download(server: LocalServer, throttled: FakeHub) -> None:
    name = "gemma-3-270m-it-Q8_0.gguf"
    before = len(_gets(throttled, name))  # the hub is shared by the whole session
    first = server.popen("pull", f"{GEMMA_REPO}:q8_0")
    wait_for(lambda: _partials(server), what="the first download to start")
    throttled.rate_limit = 0  # paused until the second pull has joined, then at full speed
    second = Watched(server.popen("pull", f"{GEMMA_REPO}:q8_0"))
    try:
        second.wait_for_stderr("Watching the download of")
    finally:
        throttled.rate_limit = None
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "Watching the download of" in err2
    try:
        assert len(_gets(throttled, name)) - before == 1
        model = _model(server, GEMMA_REPO)
        assert model is not None and model["files"] == 1 and model["status"] == "ready"
    finally:
        server.cli("rm", GEMMA_REPO)  # the next tests start without this model


def test_cancel_removes_partial_and_registration(server: LocalServer, throttled: FakeHub) -> None:
    throttled.rate_limit = 10 * MB
    pull = server.popen("pull", f"{GEMMA_REPO}:q4_k_m")
    wait_for(lambda: _partials(server), what="the download to start")
    r = server.cli("pull", "--cancel", GEMMA_REPO)
    assert r.exit_code == 0, r.stderr
    assert "cancelled" in r.stderr
    _, err = pull.communicate(timeout=30)
    assert pull.returncode == 1
    assert "cancelled" in err
    assert _model(server, GEMMA_REPO) is None
    assert list((server.home / "models").iterdir()) == []

    again = server.cli("pull", "--cancel", GEMMA_REPO)
    assert again.exit_code == 4


def test_ctrl_c_detaches_and_the_same_command_watches(server: LocalServer, throttled: FakeHub) -> None:
    throttled.rate_limit = 60 * MB
    pull = server.popen("pull", f"{GEMMA_REPO}:q4_k_m")
    wait_for(lambda: _partials(server), what="the download to start")
    pull.send_signal(signal.SIGINT)
    _, err = pull.communicate(timeout=30)
    assert pull.returncode == 130
    assert "still downloading in the background" in err
    assert (_model(server, GEMMA_REPO) or {}).get("status") == "downloading"

    throttled.rate_limit = 0  # paused until the same command has joined, then at full speed
    again = Watched(server.popen("pull", f"{GEMMA_REPO}:q4_k_m"))
    try:
        again.wait_for_stderr("Watching the download of")
    finally:
        throttled.rate_limit = None
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "Watching the download of" in err and "Download complete" in err
    assert (_model(server, GEMMA_REPO) or {}).get("status") == "ready"


def test_progress_polls_speed_up_when_the_last_bytes_are_due() -> None:
    from kamiwaza_cli.workflows import FINAL_POLL_INTERVAL, POLL_INTERVAL, FileProgress, _poll_delay

    def f(done: int, speed: float | None, status: str = "downloading") -> FileProgress:
        return FileProgress("id", "m.gguf", done, 1000 * MB, status, speed)

    assert _poll_delay([f(0, None)]) == POLL_INTERVAL  # no speed reported (a real platform): the usual pace
    assert _poll_delay([f(0, 100 * MB)]) == POLL_INTERVAL  # 10 s to go
    assert _poll_delay([f(990 * MB, 100 * MB)]) == pytest.approx(0.1)  # the end is due in 0.1 s
    assert _poll_delay([f(1000 * MB, 100 * MB)]) == FINAL_POLL_INTERVAL  # all bytes in: being verified
    assert _poll_delay([f(999 * MB, 1000 * MB)]) == FINAL_POLL_INTERVAL  # never busier than the floor
    # Two files: the pull ends with the slower one.
    assert _poll_delay([f(990 * MB, 100 * MB), f(0, 100 * MB)]) == POLL_INTERVAL
    assert _poll_delay([f(1000 * MB, None, "downloaded"), f(980 * MB, 100 * MB)]) == pytest.approx(0.2)
