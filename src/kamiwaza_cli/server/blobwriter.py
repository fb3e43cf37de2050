"""Writing a download to disk: network reads, disk writes and the sha256 in three threads.

The download's own thread reads the body into a few page-aligned buffers; a writer thread
writes each full buffer with O_DIRECT, straight to the disk, and a hash thread feeds the
same buffer to sha256. A buffer goes back to the reader once both are done with it, so a
slow disk or hash slows the download instead of buffering the file in memory.

Why O_DIRECT: the download has to be durable before the catalog calls it downloaded, and
on these VMs the page cache is the slow path. Writing 1 GB through the page cache and then
fsyncing it took 2.0-2.5 s here; writing it with O_DIRECT took 0.9 s, already on disk.
Where O_DIRECT is refused or missing (tmpfs, macOS) the writer falls back to ordinary writes
(uncached where the OS can: macOS F_NOCACHE) with a data flush every ``FLUSH_EVERY`` bytes,
so the final sync waits for the last stretch only. The OS calls come from portable.py.

What is hashed is what is written: the sha256 is fed the very buffer the writer thread wrote,
and nothing else may write the file meanwhile. The writer holds an exclusive lock on it
(``flock``, where the OS has one: a second writer fails at once instead of interleaving), checks
on leaving that the file is exactly as long as the bytes hashed, and ``sealed`` holds the lock
again while the download is verified and renamed, once it has checked that the file is still
the one written (``identity``) and still that long. Re-reading the file to hash it again would
double every download's disk traffic for a guarantee the lock already gives.

A body longer than the file is stopped: ``copy(..., limit=size)`` reads up to ``limit`` and then
raises ``BodyTooLong`` if the body still has a byte to give, so a source that declares one size
and sends more (or never ends) costs ``limit`` bytes of disk, never more.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from .. import portable

# O_DIRECT wants offsets, lengths and buffer addresses aligned to the device's logical block;
# 4 KiB covers every current disk. mmap'd buffers are page-aligned.
ALIGN = 4096
BUFFER_BYTES = 4 << 20
# One read fills at most this much of a buffer: a blocking read of a whole 4 MiB buffer would hold
# progress and the cancel check back for seconds on a slow link.
READ_BYTES = 256 << 10
BUFFERS = 4
FLUSH_EVERY = 128 << 20


class Readable(Protocol):
    def readinto(self, buffer: memoryview) -> int: ...


class BodyTooLong(Exception):
    """The body went on past ``limit`` bytes of file."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is longer than {limit} bytes")
        self.limit = limit


class FileBusy(OSError):
    """Another writer holds the file."""


class FileChanged(OSError):
    """The file on disk is no longer what this writer wrote (replaced, extended or truncated)."""


class _Filled:
    """One buffer's worth of the file, shared by the writer and the hash thread."""

    __slots__ = ("buffer", "length", "offset", "users")

    def __init__(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        self.buffer = buffer
        self.length = length
        self.offset = offset
        self.users = 2

    def view(self) -> memoryview:
        return memoryview(self.buffer)[: self.length]


def aligned_resume_offset(size: int) -> int:
    """Where a resume restarts: the partial file's size rounded down to ALIGN (an interrupted
    download can end mid-block; re-fetching those < 4 KiB keeps every write aligned)."""
    return size - size % ALIGN


class BlobWriter:
    """``with BlobWriter(path, offset, hasher) as w: w.copy(body, on_bytes)``.

    Writes ``body`` into ``path`` from ``offset`` (the file is truncated there), updating
    ``hasher`` with every byte. Leaving the block waits for both threads, fsyncs and closes;
    an error from either thread is raised there (or by the next ``copy`` step)."""

    def __init__(self, path: Path, offset: int, hasher: hashlib._Hash) -> None:
        self._hasher = hasher
        self.path = path
        self._fd, self.direct = _open(path, offset)
        try:
            _lock_exclusively(self._fd, path)
            os.ftruncate(self._fd, offset)
            st = os.fstat(self._fd)
        except OSError:
            os.close(self._fd)
            raise
        # (device, inode) of the file written: whoever renames ``path`` afterwards checks it is still this one.
        self.identity = (st.st_dev, st.st_ino)
        self._offset = offset
        # Where the bytes handed to the writer thread end, and where the ones it has written end:
        # the difference is what the disk has yet to make room for.
        self.written = offset
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(mmap.mmap(-1, BUFFER_BYTES))
        self._to_write: queue.Queue[_Filled | None] = queue.Queue()
        self._to_hash: queue.Queue[_Filled | None] = queue.Queue()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._write_loop, name="download-write", daemon=True),
            threading.Thread(target=self._hash_loop, name="download-sha256", daemon=True),
        ]

    def __enter__(self) -> BlobWriter:
        for thread in self._threads:
            thread.start()
        return self

    def copy(self, body: Readable, on_bytes: Callable[[int], None], limit: int | None = None) -> None:
        """Read ``body`` to its end, or until the file is ``limit`` bytes long: then raise
        ``BodyTooLong`` if the body has more. ``on_bytes(n)`` runs after every read (progress,
        and the cancel check, which may raise). The bytes read before a failed read are still written."""
        while True:
            buffer = self._free.get()
            self._raise_if_failed()
            view = memoryview(buffer)
            room = BUFFER_BYTES if limit is None else max(0, min(BUFFER_BYTES, limit - self._offset))
            filled = 0
            try:
                while filled < room:
                    n = body.readinto(view[filled : min(room, filled + READ_BYTES)])
                    if not n:
                        break
                    filled += n
                    on_bytes(n)
            finally:
                self._submit(buffer, filled)
            if filled < room:
                return
            if limit is not None and self._offset >= limit:
                if _has_more(body):
                    raise BodyTooLong(limit)
                return

    def _submit(self, buffer: mmap.mmap, length: int) -> None:
        if not length:
            self._free.put(buffer)
            return
        job = _Filled(buffer, length, self._offset)
        self._offset += length
        self._to_write.put(job)
        self._to_hash.put(job)

    def _done_with(self, job: _Filled) -> None:
        with self._lock:
            job.users -= 1
            if job.users:
                return
        self._free.put(job.buffer)

    def _write_loop(self) -> None:
        unflushed = 0
        while (job := self._to_write.get()) is not None:
            try:
                if self._error is None:
                    if self.direct and job.length % ALIGN:  # the file's unaligned tail
                        import fcntl  # only where O_DIRECT exists, which is never Windows

                        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~portable.direct_io_flag())
                        self.direct = False
                    _pwrite_all(self._fd, job.view(), job.offset)
                    self.written = job.offset + job.length
                    unflushed += job.length
                    if not self.direct and unflushed >= FLUSH_EVERY:
                        unflushed = 0
                        portable.flush_data(self._fd)
            except BaseException as exc:  # noqa: BLE001 - handed to the download's thread
                self._error = exc
            finally:
                self._done_with(job)

    def _hash_loop(self) -> None:
        while (job := self._to_hash.get()) is not None:
            try:
                with job.view() as view:
                    self._hasher.update(view)
            except BaseException as exc:  # noqa: BLE001 - handed to the download's thread
                self._error = exc
            finally:
                self._done_with(job)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, *exc: object) -> None:
        self._to_write.put(None)
        self._to_hash.put(None)
        for thread in self._threads:
            thread.join()
        try:
            if exc[0] is None:
                self._raise_if_failed()
                portable.make_durable(self._fd)
                if os.fstat(self._fd).st_size != self._offset:
                    raise FileChanged(f"{self.path} changed size while it was written: another writer touched it")
        finally:
            os.close(self._fd)


def _open(path: Path, offset: int) -> tuple[int, bool]:
    # O_NOFOLLOW: the partial file is this server's own; a symlink in its place was put there by someone else.
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    direct = portable.direct_io_flag()
    if direct and offset % ALIGN == 0:
        with contextlib.suppress(OSError):  # EINVAL: the filesystem does not do direct I/O
            return os.open(path, flags | direct, 0o600), True
    fd = os.open(path, flags, 0o600)
    portable.avoid_page_cache(fd)
    return fd, False


def _lock_exclusively(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # Windows has no flock; the identity and size checks still apply there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise FileBusy(f"{path} is being written by another download") from exc


@contextlib.contextmanager
def sealed(path: Path, identity: tuple[int, int], size: int) -> Iterator[None]:
    """Hold ``path`` locked while it is verified and renamed into place, after checking that it is
    still the file a BlobWriter wrote (``identity``) and ``size`` bytes long; FileChanged if not."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        _lock_exclusively(fd, path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity or st.st_size != size:
            raise FileChanged(f"{path} was replaced or changed after it was written: another writer touched it")
        yield
    finally:
        os.close(fd)


def _has_more(body: Readable) -> bool:
    """Whether ``body`` has another byte. A read that fails counts as the end: the bytes before it
    are the whole file as far as the size goes, and the checksum still judges them."""
    try:
        return body.readinto(memoryview(bytearray(1))) > 0
    except Exception:  # noqa: BLE001 - see above
        return False


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
