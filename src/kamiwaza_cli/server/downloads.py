"""Background downloads: one worker thread per file, resumable, verified, cancellable.

A file is fetched into ``<name>.incomplete`` beside its final path, resuming with an
HTTP Range from whatever bytes are already there (also after a ``kill -9`` of the
server: ``resume_interrupted`` restarts every file the catalog still marks as
downloading). The sha256 is computed while writing (``blobwriter``); size and checksum are checked
before an atomic rename, and GGUF files must parse. Only then does the catalog record
a ``storage_location``: a model is never listed as downloaded before that.
Live progress (bytes, speed) is kept in memory; everything durable is in the store.

What a source sends is bounded: a file is stopped at the size its listing declares (or, when it
declares none, at the size the source's HEAD announces) and fails if the body goes on; and
while any file is written the disk keeps ``disk_reserve`` bytes free (5% of the file system,
at least 64 MiB and at most 1 GiB; ``KAMIWAZA_DISK_RESERVE_BYTES`` sets it), so a body that
never ends is stopped there even when nobody declared a size. Between them, no source can fill
the disk the catalog and the logs are written to.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..gguf import GGUFError, read_gguf
from .blobwriter import BlobWriter, BodyTooLong, FileBusy, FileChanged, aligned_resume_offset, sealed
from .sources import HUB_HF, PARTIAL_SUFFIX, RemoteFile, SourceError, head_size, open_stream
from .store import Store, now

log = logging.getLogger("kamiwaza.server.downloads")

# Room left on the disk after a download, so the catalog and logs can still be written: a share
# of the file system, but not less than the old fixed 64 MiB, nor more than 1 GiB (5% of a 2 TB
# disk would refuse a 10 GB model with 90 GB free).
RESERVE_ENV = "KAMIWAZA_DISK_RESERVE_BYTES"
RESERVE_SHARE = 0.05
RESERVE_MIN = 64 << 20
RESERVE_MAX = 1 << 30
# How often a download looks at the free space (statvfs is cheap; once per 4 MiB is plenty).
RESERVE_CHECK_BYTES = 4 << 20


def disk_reserve(path: Path) -> int:
    """The bytes a download leaves free on the file system holding ``path``."""
    raw = os.environ.get(RESERVE_ENV, "").strip()
    if raw:
        if raw.isdigit():
            return int(raw)
        log.warning("%s=%r is not a number of bytes; using the default reserve", RESERVE_ENV, raw)
    total = shutil.disk_usage(path).total
    return min(RESERVE_MAX, max(RESERVE_MIN, int(total * RESERVE_SHARE)))


class Cancelled(Exception):
    pass


class Stopped(Exception):
    """The server is shutting down: leave the file marked downloading so it resumes."""


@dataclass
class Progress:
    total: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    resumed_from: int = 0
    last_bytes_at: float = field(default_factory=time.monotonic)

    def speed(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.resumed_from) / elapsed if elapsed > 0.2 else 0.0

    def percentage(self) -> int:
        if not self.total:
            return 0
        return min(100, int(self.done * 100 / self.total))

    def eta(self) -> int | None:
        speed = self.speed()
        if not self.total or speed <= 0:
            return None
        return int((self.total - self.done) / speed)


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def mmss(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def human_rate(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if bps < 1024 or unit == "GB/s":
            return f"{bps:.1f} {unit}"
        bps /= 1024
    return f"{bps:.1f} GB/s"


class DiskFull(Exception):
    pass


class ReserveReached(DiskFull):
    """Writing on would leave less than the disk reserve free."""


class DownloadManager:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._workers: dict[str, threading.Thread] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._progress: dict[str, Progress] = {}
        self._stopping = threading.Event()

    # Public API
    def check_space(self, files: Sequence[Mapping[str, object]]) -> None:
        """Raise DiskFull when the files still to fetch don't fit, before anything is registered."""
        need = 0
        for f in files:
            size = f.get("size")
            if not isinstance(size, int):
                continue
            existing = f.get("partial_bytes")
            need += size - (existing if isinstance(existing, int) else 0)
        free = shutil.disk_usage(self.store.models_dir).free
        reserve = disk_reserve(self.store.models_dir)
        if need > max(0, free - reserve):
            raise DiskFull(
                f"not enough disk space: the download needs {_gb(need)} and the server keeps {_gb(reserve)} free"
                f" ({RESERVE_ENV}), {_gb(free)} free in {self.store.models_dir}; free some space and pull again"
            )

    def start(self, file_id: str) -> None:
        with self._lock:
            worker = self._workers.get(file_id)
            if worker is not None and worker.is_alive():
                return  # a second pull of the same file joins the running download
            cancel = threading.Event()
            self._cancel[file_id] = cancel
            worker = threading.Thread(
                target=self._run, args=(file_id, cancel), name=f"download-{file_id[:8]}", daemon=True
            )
            self._workers[file_id] = worker
        worker.start()

    def resume_interrupted(self) -> int:
        rows = self.store.downloading_files()
        for row in rows:
            log.info("resuming download of %s", row["name"])
            self.start(row["id"])
        return len(rows)

    def is_active(self, file_id: str) -> bool:
        with self._lock:
            worker = self._workers.get(file_id)
            return worker is not None and worker.is_alive()

    def progress(self, file_id: str) -> Progress | None:
        return self._progress.get(file_id)

    def cancel(self, file_id: str, wait: float = 10.0) -> bool:
        """Stop a running download and delete its partial bytes; False if none was running."""
        with self._lock:
            worker = self._workers.get(file_id)
            event = self._cancel.get(file_id)
        if worker is None or event is None or not worker.is_alive():
            return False
        event.set()
        worker.join(wait)
        return True

    def shutdown(self, wait: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.join(wait)

    # Worker
    def _run(self, file_id: str, cancel: threading.Event) -> None:
        row = self.store.get_file(file_id)
        if row is None:
            return
        dest = self.store.blob_path(row["m_id"], row["name"])
        part = partial_path(dest)
        started_at = row["download_started_at"] or now()
        self.store.update_file(file_id, is_downloading=True, download_started_at=started_at, download_error=None)
        t0 = time.monotonic()
        try:
            digest, size, identity = self._fetch(row, part, cancel)
            with sealed(part, identity, size):  # the bytes verified and renamed are the bytes hashed
                self._verify(row, part, digest, size)
                os.replace(part, dest)
        except Stopped:
            log.info("download of %s paused for shutdown", row["name"])
            return
        except Cancelled:
            part.unlink(missing_ok=True)
            self.store.update_file(
                file_id,
                is_downloading=False,
                download=False,
                dl_requested_at=None,
                download_cancelled_at=now(),
                download_error="cancelled",
                download_started_at=None,
            )
            return
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the file row
            message, keep_partial = _describe(exc, row["name"])
            if not keep_partial:
                part.unlink(missing_ok=True)
            log.warning("download of %s failed: %s", row["name"], message)
            self.store.update_file(
                file_id,
                is_downloading=False,
                download=False,
                dl_requested_at=None,
                download_error=message,
                download_started_at=None if not keep_partial else started_at,
            )
            return
        finally:
            self._progress.pop(file_id, None)
        self.store.update_file(
            file_id,
            storage_location=str(dest),
            is_downloading=False,
            dl_requested_at=None,
            download_elapsed=mmss(time.monotonic() - t0),
            checksum=digest,
            checksum_type="sha256",
            size=size,
            download_error=None,
            download_started_at=None,
        )
        log.info("downloaded %s (%d bytes)", row["name"], size)

    def _fetch(self, row: dict[str, object], part: Path, cancel: threading.Event) -> tuple[str, int, tuple[int, int]]:
        """Fetch into ``part``; return its sha256, size and (device, inode)."""
        remote = RemoteFile(str(row["name"]), _int(row["size"]), _str(row["checksum"]), str(row["source_url"]))
        if row["hub"] == HUB_HF:  # hub auth (HF_TOKEN) applies to hub files only, never to other hosts
            from huggingface_hub.utils import build_hf_headers

            remote.headers = build_hf_headers(token=os.environ.get("HF_TOKEN") or None)
        # The size the file may not pass: the listing's, else what the source's HEAD announces.
        declared = remote.size
        if declared is None:
            declared = head_size(remote)
        part.parent.mkdir(parents=True, exist_ok=True)
        offset = aligned_resume_offset(part.stat().st_size) if part.exists() else 0
        if declared is not None and offset > declared:
            offset = 0
        hasher = hashlib.sha256()
        progress = Progress(total=declared, done=offset, resumed_from=offset)
        self._progress[str(row["id"])] = progress
        check = self._check(cancel)  # once per download, not once per read
        if offset:
            _hash_prefix(part, offset, hasher, check)
        reserve = disk_reserve(part.parent)
        writing: list[BlobWriter] = []
        next_look = 0

        def on_bytes(n: int) -> None:
            nonlocal next_look
            check()
            progress.done += n
            progress.last_bytes_at = time.monotonic()
            if progress.done >= next_look:
                next_look = progress.done + RESERVE_CHECK_BYTES
                # Bytes read but not yet written still need their room on the disk.
                unwritten = progress.done - writing[0].written if writing else 0
                free = shutil.disk_usage(part.parent).free
                if free - unwritten < reserve:
                    raise ReserveReached(
                        f"disk full while downloading {row['name']}: {_gb(free)} free on the disk, and the server"
                        f" keeps {_gb(reserve)} free ({RESERVE_ENV}); free some space and pull again"
                    )

        with open_stream(remote, offset) as (start, total, body):
            if start != offset:  # the source ignored the Range: start over
                offset = 0
                hasher = hashlib.sha256()
                progress.done = progress.resumed_from = 0
            if declared is not None and total is not None and total > declared:
                raise VerifyError(_too_long(str(row["name"]), declared, remote.size is not None))
            limit = declared if declared is not None else total
            progress.total = limit
            with BlobWriter(part, offset, hasher) as writer:
                writing.append(writer)
                try:
                    writer.copy(body, on_bytes, limit)
                except BodyTooLong as exc:
                    raise VerifyError(_too_long(str(row["name"]), exc.limit, remote.size is not None)) from None
            identity = writer.identity
        if remote.size is None and limit is not None and progress.done < limit:
            # Only the HEAD said how long the file is (_verify checks a listed size): same as a cut connection.
            raise SourceError(
                "offline",
                f"the download of {row['name']} stopped at {progress.done} of {limit} bytes; pull again to resume",
            )
        return hasher.hexdigest(), progress.done, identity

    def _check(self, cancel: threading.Event):  # type: ignore[no-untyped-def]
        def check() -> None:
            if cancel.is_set():
                raise Cancelled()
            if self._stopping.is_set():
                raise Stopped()

        return check

    @staticmethod
    def _verify(row: dict[str, object], part: Path, digest: str, size: int) -> None:
        expected_size = _int(row["size"])
        if expected_size is not None and size < expected_size:
            # The connection ended early: keep the bytes, the next pull resumes from them.
            raise SourceError(
                "offline",
                f"the download of {row['name']} stopped at {size} of {expected_size} bytes; pull again to resume",
            )
        if expected_size is not None and size != expected_size:
            raise VerifyError(
                f"{row['name']} is {size} bytes, expected {expected_size}: the source sent a truncated file"
            )
        expected_sha = _str(row["checksum"])
        if expected_sha and expected_sha.lower() != digest:
            raise VerifyError(
                f"checksum mismatch for {row['name']}: expected sha256 {expected_sha[:12]}…, got {digest[:12]}…"
            )
        if str(row["name"]).lower().endswith(".gguf"):
            try:
                read_gguf(part)
            except GGUFError as exc:
                # The message names the internal .incomplete path; users know the file by its name.
                raise VerifyError(str(exc).replace(str(part), str(row["name"]))) from exc


class VerifyError(Exception):
    pass


def _too_long(name: str, limit: int, listed: bool) -> str:
    said = "its listing declares" if listed else "the source announced"
    return (
        f"{name}: the source sends more than the {limit} bytes {said}; the download was stopped there and"
        " deleted: check the source before pulling again"
    )


def _describe(exc: Exception, name: str) -> tuple[str, bool]:
    """A one-line message for the file row, and whether the partial bytes are worth keeping."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while downloading {name}; free some space and pull again", False
    if isinstance(exc, DiskFull):
        return str(exc), False
    if isinstance(exc, FileBusy):  # its bytes belong to the download that holds it: keep them
        return f"another download is writing {name}; wait for it to finish, or cancel it and pull again", True
    if isinstance(exc, FileChanged):
        return f"{name} was changed on disk while it was downloaded; pull again", False
    if isinstance(exc, VerifyError):
        return str(exc), False
    if isinstance(exc, SourceError):
        return exc.message, exc.code == "offline"
    return f"downloading {name} failed: {exc}", True


def _hash_prefix(path: Path, length: int, hasher: hashlib._Hash, check) -> None:  # type: ignore[no-untyped-def]
    with path.open("rb") as fh:
        remaining = length
        while remaining:
            check()
            block = fh.read(min(remaining, 4 << 20))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
