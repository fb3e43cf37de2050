"""BlobWriter: what a download writes is exactly the body, hashed, in both the O_DIRECT and the
buffered mode, with resumes, failed reads and cancels leaving the right bytes behind."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from kamiwaza_cli.server import blobwriter
from kamiwaza_cli.server.blobwriter import ALIGN, BUFFER_BYTES, BlobWriter, aligned_resume_offset

# Three full buffers and an unaligned tail: every path of the writer (full buffers, the tail).
DATA = os.urandom(3 * BUFFER_BYTES + 12345)


class TrickleBody(io.BytesIO):
    """A body that hands out at most 300 KiB per read, like a socket, and can fail part-way."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("peer went away")
        return super().readinto(buffer[: 300 << 10])


@pytest.fixture(params=["direct", "buffered"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "buffered":  # as on a filesystem (or OS) without O_DIRECT
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    return str(request.param)


def write(path: Path, offset: int, body: io.BytesIO, on_bytes=lambda n: None) -> tuple[str, bool]:  # type: ignore[no-untyped-def]
    hasher = hashlib.sha256(DATA[:offset])
    with BlobWriter(path, offset, hasher) as writer:
        direct = writer.direct
        writer.copy(body, on_bytes)
    return hasher.hexdigest(), direct


def no_writer_threads() -> bool:
    return not any(t.name in ("download-write", "download-sha256") for t in threading.enumerate())


def test_the_file_and_its_sha256_are_the_body(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "m.gguf.incomplete"
    seen: list[int] = []
    digest, direct = write(path, 0, TrickleBody(DATA), seen.append)
    assert path.read_bytes() == DATA
    assert digest == hashlib.sha256(DATA).hexdigest()
    assert sum(seen) == len(DATA)
    if mode == "buffered":
        assert not direct
    assert no_writer_threads()


def test_a_resume_truncates_to_the_aligned_offset_and_appends(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "m.gguf.incomplete"
    interrupted_at = BUFFER_BYTES + 5000  # mid-block, as after a kill -9
    path.write_bytes(DATA[:interrupted_at] + b"junk past the resume point")
    offset = aligned_resume_offset(interrupted_at)
    assert offset % ALIGN == 0 and interrupted_at - ALIGN < offset <= interrupted_at
    digest, _ = write(path, offset, TrickleBody(DATA[offset:]))
    assert path.read_bytes() == DATA
    assert digest == hashlib.sha256(DATA).hexdigest()


def test_a_failed_read_keeps_every_byte_read_before_it(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "m.gguf.incomplete"
    fail_after = 2 * BUFFER_BYTES + (900 << 10)  # inside the third buffer
    with pytest.raises(ConnectionResetError):
        write(path, 0, TrickleBody(DATA, fail_after=fail_after))
    kept = path.read_bytes()
    assert len(kept) >= fail_after
    assert kept == DATA[: len(kept)]
    assert no_writer_threads()


def test_a_cancel_from_the_progress_callback_stops_the_copy(tmp_path: Path, mode: str) -> None:
    class Cancelled(Exception):
        pass

    done = 0

    def cancel_at_one_buffer(n: int) -> None:
        nonlocal done
        done += n
        if done >= BUFFER_BYTES:
            raise Cancelled()

    path = tmp_path / "m.gguf.incomplete"
    with pytest.raises(Cancelled):
        write(path, 0, TrickleBody(DATA), cancel_at_one_buffer)
    assert path.stat().st_size < len(DATA)
    assert no_writer_threads()


def test_a_disk_error_reaches_the_download_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobwriter.os, "pwrite", full)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path / "m.gguf.incomplete", 0, TrickleBody(DATA))
    assert no_writer_threads()
