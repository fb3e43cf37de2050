"""An engine's log file, read by byte position: what ``kamiwaza logs -f`` follows.

An engine writes its output straight into ``<deployment>.log`` (opened for appending, so it keeps
writing at the end whatever happens to the file). Every start of the deployment appends to the same
file, so its positions run on across restarts. Past ``KAMIWAZA_ENGINE_LOG_BYTES`` (default 16 MiB)
the supervisor rotates it: the file is copied to ``<deployment>.log.1`` (replacing the previous
one) and cut to nothing. Positions are counted over the whole history, not per file: a small JSON
file beside the log (``<deployment>.log.state``) keeps how many bytes and lines the rotations took
away, so a position handed out before a rotation, or before a server restart, still names the same
byte. A reader that fell more than one rotation behind resumes at the oldest byte still kept.

Rotation copies, then truncates: lines the engine writes between the two steps (microseconds) are
copied by a second pass when it sees them, which leaves a window of a few instructions, as
logrotate's ``copytruncate`` has. Reads and rotations of one log take the same lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .shared import env_whole_number

log = logging.getLogger("kamiwaza.server.enginelog")

ROTATE_ENV = "KAMIWAZA_ENGINE_LOG_BYTES"
DEFAULT_ROTATE_BYTES = 16 << 20
CHUNK = 64 << 10
PAGE_BYTES = 1 << 20  # at most this much of the log per answer; the reader asks again from next_offset

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
# Newlines counted so far in a current file: path -> (file size counted up to, newlines in it).
_counted: dict[str, tuple[int, int]] = {}


def rotate_bytes() -> int:
    return env_whole_number(ROTATE_ENV, DEFAULT_ROTATE_BYTES, CHUNK, log)


@dataclass(frozen=True)
class Chunk:
    """Complete lines of a log and where the next read starts (a position over the whole history)."""

    lines: list[str]
    next_offset: int
    total_lines: int  # lines the deployment's engine has written in all, rotated ones included


class EngineLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.state_path = path.with_name(path.name + ".state")
        with _locks_guard:
            self._lock = _locks.setdefault(str(path), threading.Lock())

    # State: bytes and lines the rotations took away from the current file.
    def _state(self) -> tuple[int, int]:
        try:
            data = json.loads(self.state_path.read_text())
            return int(data["base"]), int(data["base_lines"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    def _write_state(self, base: int, base_lines: int) -> None:
        partial = self.state_path.with_name(self.state_path.name + ".partial")
        partial.write_text(json.dumps({"base": base, "base_lines": base_lines}))
        os.replace(partial, self.state_path)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _segments(self) -> list[tuple[Path, int, int]]:
        """(file, position of its first byte, its size): the rotated file, then the current one."""
        base, _ = self._state()
        kept = self._size(self.rotated)
        current = self._size(self.path)
        segments = [(self.rotated, base - kept, kept)] if kept and base >= kept else []
        return [*segments, (self.path, base, current)]

    def _read(self, segments: list[tuple[Path, int, int]], start: int, end: int) -> bytes:
        out = bytearray()
        for path, first, size in segments:
            lo, hi = max(start, first), min(end, first + size)
            if lo >= hi:
                continue
            with contextlib.suppress(OSError), path.open("rb") as fh:
                fh.seek(lo - first)
                out += fh.read(hi - lo)
        return bytes(out)

    def _total_lines(self, base_lines: int) -> int:
        size = self._size(self.path)
        counted_to, count = _counted.get(str(self.path), (0, 0))
        if size < counted_to:  # cut by a rotation (or replaced): count it again
            counted_to, count = 0, 0
        if size > counted_to:
            with contextlib.suppress(OSError), self.path.open("rb") as fh:
                fh.seek(counted_to)
                while counted_to < size:
                    block = fh.read(min(CHUNK, size - counted_to))
                    if not block:
                        break
                    count += block.count(b"\n")
                    counted_to += len(block)
        _counted[str(self.path)] = (counted_to, count)
        return base_lines + count

    def last(self, lines: int, *, partial: bool = False) -> Chunk:
        """The last ``lines`` non-blank complete lines (and a last line still being written when
        ``partial``), and the position after them."""
        with self._lock:
            segments = self._segments()
            oldest, end = segments[0][1], segments[-1][1] + segments[-1][2]
            start, data = end, b""
            while start > oldest and data.count(b"\n") <= lines:
                start = max(oldest, start - CHUNK)
                data = self._read(segments, start, end)
            data, stop = _complete(data, end, partial)
            kept = _text_lines(data)
            if start > oldest and kept:
                kept = kept[1:]  # the first may be a line cut in two by where the read began
            return Chunk(kept[-lines:], stop, self._total_lines(self._state()[1]))

    def read(self, since: int, lines: int, *, partial: bool = False) -> Chunk:
        """Up to ``lines`` non-blank complete lines from position ``since`` (the oldest kept byte if
        it is gone; the start of the current file if it lies beyond the end, as after the file was
        replaced), and the position after the last one returned."""
        with self._lock:
            segments = self._segments()
            oldest, end = segments[0][1], segments[-1][1] + segments[-1][2]
            start = since if since <= end else segments[-1][1]
            start = max(start, oldest)
            raw = self._read(segments, start, min(end, start + PAGE_BYTES))
            data, stop = _complete(raw, start + len(raw), partial and start + len(raw) >= end)
            if not data and len(raw) == PAGE_BYTES:  # a line longer than a page: handed out in pieces
                data, stop = raw, start + len(raw)
            out: list[str] = []
            position = start
            for raw in data.splitlines(keepends=True):
                if len(out) == lines:
                    break
                position += len(raw)
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    out.append(text)
            else:
                position = stop
            return Chunk(out, position, self._total_lines(self._state()[1]))

    def rotate_if_larger(self, limit: int) -> bool:
        """Move the log to ``.log.1`` and start it empty, when it has grown past ``limit`` bytes."""
        if self._size(self.path) <= limit:
            return False
        with self._lock:
            base, base_lines = self._state()
            partial = self.rotated.with_name(self.rotated.name + ".partial")
            copied = newlines = 0
            with self.path.open("rb") as src, partial.open("wb") as dst:
                # Copy until the end stays put, then cut at once: the engine keeps appending meanwhile.
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        if copied >= self._size(self.path):
                            break
                        continue
                    dst.write(block)
                    copied += len(block)
                    newlines += block.count(b"\n")
                os.truncate(self.path, 0)
            os.replace(partial, self.rotated)
            self._write_state(base + copied, base_lines + newlines)
            _counted.pop(str(self.path), None)
        log.info("rotated %s at %d bytes", self.path.name, copied)
        return True


def _complete(data: bytes, end: int, partial: bool) -> tuple[bytes, int]:
    """``data`` up to its last newline and the position after it (all of it when ``partial``)."""
    if partial or not data:
        return data, end
    cut = data.rfind(b"\n") + 1
    return data[:cut], end - (len(data) - cut)


def _text_lines(data: bytes) -> list[str]:
    return [ln for ln in data.decode("utf-8", errors="replace").splitlines() if ln.strip()]
