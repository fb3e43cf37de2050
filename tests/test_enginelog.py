"""enginelog.py in-process: positions over the whole history of a log, through rotations."""

from __future__ import annotations

from pathlib import Path

from kamiwaza_cli.server import enginelog
from kamiwaza_cli.server.enginelog import EngineLog


def _write(path: Path, lines: list[str], end: str = "\n") -> None:
    with path.open("ab") as fh:
        fh.write(("\n".join(lines) + end).encode())


def test_positions_survive_rotations_and_a_reader_one_rotation_behind_misses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    log = EngineLog(path)
    first = [f"a{i:05d}" + "." * 90 for i in range(1500)]  # ~150 KB
    _write(path, first)
    chunk = log.last(3)
    assert chunk.lines == first[-3:] and chunk.total_lines == 1500
    start = log.read(0, 10).next_offset  # a reader that has seen the first ten lines
    assert log.rotate_if_larger(enginelog.CHUNK)
    assert path.stat().st_size == 0 and EngineLog(path).last(2).lines == first[-2:]  # read from .1
    second = [f"b{i:05d}" for i in range(10)]
    _write(path, second)
    seen, offset = [], start
    while True:
        page = log.read(offset, 400)
        if not page.lines:
            break
        seen += page.lines
        offset = page.next_offset
    assert seen == first[10:] + second and log.read(offset, 10).total_lines == 1510
    # Two rotations later the first file is gone: a reader that far behind resumes at the oldest kept.
    _write(path, ["c" * 100] * 700)
    assert log.rotate_if_larger(enginelog.CHUNK)
    _write(path, ["d"])
    assert log.read(start, 10).lines[0] == second[0]
    # A position past the end (the file was replaced): from the start of the current file.
    assert log.read(10**12, 10).lines == ["d"]


def test_a_line_still_being_written_is_held_back_until_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    log = EngineLog(path)
    _write(path, ["done", "half"], end="")
    page = log.read(0, 10)
    assert page.lines == ["done"] and log.read(page.next_offset, 10).lines == []
    assert log.read(page.next_offset, 10, partial=True).lines == ["half"]  # the engine has stopped
    _write(path, [" and the rest"])
    assert log.read(page.next_offset, 10).lines == ["half and the rest"]
    assert log.last(5).lines == ["done", "half and the rest"]
