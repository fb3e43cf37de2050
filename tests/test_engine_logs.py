"""``kamiwaza logs -f`` follows an engine log by byte position: past 1 MiB, across rotations of the
log and a restart of the server (which restarts the engine), nothing missed and nothing twice.

A real local server with the real small model on llama.cpp, rotating engine logs at 256 KiB
(``KAMIWAZA_ENGINE_LOG_BYTES``). The engine writes ~137 KB when it starts; the test appends batches of
marked lines to the same file the engine writes to (as the engine's own output would be), and waits
for the follower, a real ``kamiwaza logs -f`` process, to print each batch before the next.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import loopback
import pytest
from conftest import LocalServer, Watched, make_server, wait_for
from fakehub import FakeHub

MODEL = "gemma-3-270m-q4_k_m"
ROTATE = 256 << 10
BATCH = 1000  # lines of ~100 bytes: ~100 KB a batch


@pytest.fixture(scope="module")
def srv(hub: FakeHub, gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = make_server(tmp_path_factory.mktemp("enginelogs"), hub.url)
    server.env.update(KAMIWAZA_ENGINE_LOG_BYTES=str(ROTATE))
    server.start()
    try:
        assert server.cli("pull", str(gemma_path)).exit_code == 0
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


def _append(log: Path, batch: int) -> list[str]:
    lines = [f"marker {batch:03d}-{i:04d} " + "x" * 80 for i in range(BATCH)]
    with log.open("ab") as fh:  # one write, appended as the engine's own writes are
        fh.write(("\n".join(lines) + "\n").encode())
    return lines


def test_logs_follow_past_1_mib_across_rotations_and_a_server_restart(srv: LocalServer) -> None:
    r = srv.cli("serve", MODEL, "--parallel", "1", "--json")
    assert r.exit_code == 0, r.stderr
    dep_id = json.loads(r.stdout)["id"]
    log = srv.home / "logs" / "deployments" / f"{dep_id}.log"
    if not log.exists():
        [log] = srv.home.rglob(f"{dep_id}.log")
    follower = Watched(srv.popen("logs", "-f", "-n", "1", dep_id))
    wait_for(follower.stdout_so_far, timeout=60, what="the follower's first line")  # its starting point
    expected: list[str] = []

    def batch(b: int) -> None:
        expected.extend(_append(log, b))
        wait_for(lambda: expected[-1] in follower.stdout_so_far(), timeout=60, what=f"batch {b} followed")
        # the supervisor rotates on a timer: the next batch goes to a log rotated meanwhile
        wait_for(lambda: log.stat().st_size <= ROTATE, timeout=60, what=f"the log rotated after batch {b}")

    def rotated_bytes() -> int:
        state = log.with_name(log.name + ".state")
        return int(json.loads(state.read_text())["base"]) if state.exists() else 0

    # Until rotations have taken more than 1 MiB away (four or five of them): how many batches that
    # takes depends on how much the engine wrote when it started, which varies.
    b = 0
    while rotated_bytes() <= 1 << 20:
        batch(b)
        b += 1
        assert b < 30, "the log does not rotate"
    assert log.with_name(log.name + ".1").exists()

    srv.stop()  # the engine stops with the server; the restarted server restores it, same log
    srv.start()
    wait_for(lambda: follower.stdout_so_far().count(" starting ") >= 1, timeout=120, what="the engine's restart")
    for after_restart in range(b, b + 3):
        batch(after_restart)

    assert loopback.delete(f"{srv.url}/serving/deployment/{dep_id}", timeout=60).status_code == 200
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    followed = [ln for ln in out.splitlines() if ln.startswith("marker ")]
    assert followed == expected  # in order, none missed, none twice
    assert out.count(" starting ") == 1  # the restart's first line, once (the first start was before -n 1)
