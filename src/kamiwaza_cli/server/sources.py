"""Where weights come from: the Hugging Face hub, local files and plain http(s) URLs.

Each source answers three questions for the rest of the server: which models match a
query (``search``), which files a model has with their sizes and sha256 (``list_files``),
and the bytes of one file from an offset (``open_stream``, for resumable downloads: a body
read with ``readinto``, so the bytes land straight in the download's aligned buffers).
Every failure becomes a ``SourceError`` with a short code the API can report.
The hub is reached through huggingface_hub (``HF_ENDPOINT`` and ``HF_TOKEN`` honoured),
read at call time so a server started with a different environment sees its own.

This module also owns what a source may not do to the server:

* A listing is refused whole (``check_listing``) when two of its files would share one path on
  disk: names equal once normalized (``./x`` and ``x``, ``a//b`` and ``a/b``, ``X`` and ``x``:
  case and Unicode form are folded everywhere, so a model directory means the same on every
  file system), a file that is another's directory, or a name ending in ``PARTIAL_SUFFIX``, the
  temporary name of another file's download. The rule: two writers never share a file.
  Names that would leave the model directory (``../x``, ``/x``) are dropped, as before.
* The checks made while a request waits (hub metadata, a URL's HEAD) time out after
  ``OUTBOUND_SECONDS`` and run in ``OUTBOUND``, a small pool of their own, so slow hosts
  never hold the threads every other route shares.
* Errors do not tell a caller more about the machine than it could find out itself: a local
  file that is missing, unreadable, not a regular file or not a GGUF file gets one message, and
  a URL that answers an HTTP error gets the same message as one whose port is closed (the
  detail goes to the server's log).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import io
import logging
import os
import queue
import re
import stat
import threading
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from ..gguf import GGUFError, is_gguf_prefix, read_gguf
from .store import UnsafeName, safe_relative_name

log = logging.getLogger("kamiwaza.server.sources")
T = TypeVar("T")

HUB_HF = "HubsHf"
HUB_FILE = "HubsFile"
HUB_URL = "HubsUrl"

_HF_ALIASES = {"hf", "huggingface", "hubshf"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A download's body may pause for a while (a CDN warming up); it runs in the background.
READ_TIMEOUT = 60.0
# Anything a request waits for (metadata, a HEAD) gives up after this long: a slow host costs
# the caller 10 s, not a minute, and never more than one OUTBOUND worker. KAMIWAZA_OUTBOUND_TIMEOUT
# changes it (read once, when the server imports this; mostly for tests: a shorter wait proves the same).
OUTBOUND_TIMEOUT_ENV = "KAMIWAZA_OUTBOUND_TIMEOUT"


def _outbound_seconds() -> float:
    raw = os.environ.get(OUTBOUND_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        value = 10.0
    return value if 0 < value <= 600 else 10.0


OUTBOUND_SECONDS = _outbound_seconds()
OUTBOUND_TIMEOUT = httpx.Timeout(OUTBOUND_SECONDS)
# Where a file's bytes are written until they are verified (``<name>.incomplete``).
PARTIAL_SUFFIX = ".incomplete"


class SourceError(Exception):
    """code: not_found | gated | offline | bad_input | error (maps to an HTTP status in routes/context.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Busy(Exception):
    """Every OUTBOUND worker is taken and the wait list is full: the caller should retry shortly."""


class OutboundPool:
    """Daemon threads that run the blocking outbound checks of requests, off the event loop and
    off the thread pool that the server's other (sync) routes share.

    At most ``workers`` checks run at once and ``waiting`` more wait for a worker; beyond that
    ``run`` raises ``Busy`` at once instead of queueing without bound. Daemon threads: a check
    stuck on a slow host must not hold up the server's exit."""

    def __init__(self, workers: int, waiting: int) -> None:
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers + waiting)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False

    async def run(self, fn: Callable[[], T]) -> T:
        if not self._slots.acquire(blocking=False):
            raise Busy(
                f"the server is already checking {self.workers} sources and has more waiting;"
                " try again in a few seconds"
            )
        self._start()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            try:
                if done.set_running_or_notify_cancel():  # False: the caller went away while it waited
                    try:
                        done.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request
                        done.set_exception(exc)
            finally:
                self._slots.release()

        self._jobs.put(job)
        return await asyncio.wrap_future(done)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for i in range(self.workers):
                threading.Thread(target=self._work, name=f"outbound-{i}", daemon=True).start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()


# 16 slow hosts at once cost 16 idle threads; the 17th to 32nd caller waits, the next is told to retry.
OUTBOUND = OutboundPool(workers=16, waiting=16)


@dataclass
class RemoteModel:
    repo_id: str
    hub: str
    name: str
    author: str | None = None
    revision: str | None = None
    description: str | None = None


@dataclass
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def normalize_hub(hub: str | None, repo_id: str) -> str:
    if hub and hub.strip().lower() in _HF_ALIASES:
        return HUB_HF
    if hub in (HUB_FILE, HUB_URL):
        return hub
    return hub if hub else hub_for(repo_id)


def hub_for(query: str) -> str:
    lowered = query.lower()
    if lowered.startswith("file:"):
        return HUB_FILE
    if lowered.startswith(("http://", "https://")):
        return HUB_URL
    return HUB_HF


def search(query: str, limit: int = 100) -> tuple[list[RemoteModel], SourceError | None]:
    """Models matching ``query`` on its source; a failure is returned, not raised (search is best effort)."""
    try:
        hub = hub_for(query)
        if hub in (HUB_FILE, HUB_URL):
            return [lookup(hub, query)], None
        if "/" in query:
            return [lookup(HUB_HF, query)], None
        return [_hf_model(repo_id) for repo_id in _hf_search(query, max(1, min(limit, 100)))], None
    except SourceError as exc:
        return [], exc
    except Exception as exc:  # noqa: BLE001 - any hub client failure is reported, not raised
        return [], _translate_hf(exc, query)


def lookup(hub: str, repo_id: str) -> RemoteModel:
    if hub == HUB_FILE:
        path = local_gguf(repo_id)
        return RemoteModel(repo_id, HUB_FILE, path.stem, description=f"Local file {path}")
    if hub == HUB_URL:
        name = _url_filename(repo_id)
        return RemoteModel(repo_id, HUB_URL, Path(name).stem, author=urlsplit(repo_id).hostname)
    if hub != HUB_HF:
        raise SourceError("bad_input", f"unknown hub {hub!r}; this server knows {HUB_HF}, {HUB_FILE}, {HUB_URL}")
    info = _hf_info(repo_id, files=False)
    return RemoteModel(repo_id, HUB_HF, repo_id.split("/")[-1], author=info.author, revision=info.sha)


def list_files(hub: str, repo_id: str, revision: str | None = None) -> list[RemoteFile]:
    """The files of ``repo_id``; SourceError when the source fails or its listing is refused
    (``check_listing``)."""
    if hub == HUB_FILE:
        path = local_gguf(repo_id)
        files = [RemoteFile(path.name, path.stat().st_size, None, path.as_uri())]
        check_listing(repo_id, [f.name for f in files])
        return files
    if hub == HUB_URL:
        files = [_url_file(repo_id)]
        check_listing(repo_id, [f.name for f in files])
        return files
    if hub != HUB_HF:
        raise SourceError("bad_input", f"unknown hub {hub!r}")
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    info = _hf_info(repo_id, files=True, revision=revision)
    headers = build_hf_headers(token=_hf_token())
    files = []
    for sib in info.siblings or []:
        try:
            safe_relative_name(sib.rfilename)
        except UnsafeName:
            continue  # a hostile hub listing "../x" never reaches the disk
        sha = sib.lfs.sha256 if sib.lfs else None
        url = hf_hub_url(repo_id, sib.rfilename, revision=info.sha or revision, endpoint=_hf_endpoint())
        files.append(RemoteFile(sib.rfilename, sib.size, sha, url, dict(headers)))
    check_listing(repo_id, [f.name for f in files])
    return files


def path_key(name: str) -> str:
    """Where a listed name lands, as the least forgiving file system sees it: "./x", "a//b", "X"
    and a decomposed "é" all reduce to the same key as "x", "a/b", "x" and a composed "é"."""
    return unicodedata.normalize("NFC", str(PurePosixPath(name))).casefold()


def check_listing(repo_id: str, names: Iterable[str]) -> None:
    """Refuse a listing in which two files would share a path on disk (see the module docstring).

    Called before anything is registered, so a refused listing leaves no row and no file."""
    seen: dict[str, str] = {}
    for name in names:
        if any(part.casefold().endswith(PARTIAL_SUFFIX) for part in PurePosixPath(name).parts):
            raise SourceError(
                "error",
                f"{repo_id} lists {name!r}, which ends in {PARTIAL_SUFFIX}, the name this server gives a file"
                " while it downloads: refused, nothing was downloaded; report the repo to its owner",
            )
        key = path_key(name)
        if key in seen:
            raise _colliding(repo_id, seen[key], name)
        seen[key] = name
    for key, name in seen.items():  # a file may not be another file's directory ("a" and "a/b")
        for parent in PurePosixPath(key).parents:
            if str(parent) in seen:
                raise _colliding(repo_id, seen[str(parent)], name)


def _colliding(repo_id: str, first: str, second: str) -> SourceError:
    return SourceError(
        "error",
        f"{repo_id} lists files that would be written to the same place ({first!r} and {second!r}):"
        " refused, nothing was downloaded; report the repo to its owner",
    )


def check_access(remote: RemoteFile) -> None:
    """Fail before anything is registered when a hub file can't be fetched (gated repo, gone file).

    For the hub the server was configured with (HF_ENDPOINT), whose errors are worth telling
    apart; a caller's URL was already checked, with one message for every failure, by list_files."""
    if remote.url.startswith("file:"):
        return
    try:
        with httpx.Client(follow_redirects=True, timeout=OUTBOUND_TIMEOUT) as client:
            resp = client.head(remote.url, headers=remote.headers)
    except httpx.TransportError as exc:
        raise SourceError("offline", f"cannot reach {urlsplit(remote.url).hostname}: {exc}") from exc
    if resp.status_code in (401, 403):
        gated = resp.headers.get("x-error-code") == "GatedRepo"
        raise SourceError(
            "gated",
            f"{remote.name} is gated: accept the model's license on the hub and start the server with HF_TOKEN set"
            if gated
            else f"access to {remote.name} was refused (HTTP {resp.status_code})",
        )
    if resp.status_code == 404:
        raise SourceError("not_found", f"{remote.name} was not found at its source (HTTP 404)")
    if resp.status_code >= 400:
        raise SourceError("error", f"{remote.name}: its source answered HTTP {resp.status_code}")


def _origin(url: str) -> tuple[str, str | None, int]:
    p = urlsplit(url)
    return p.scheme, p.hostname, p.port or (443 if p.scheme == "https" else 80)


class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
    """urllib forwards every header on a redirect; credentials must not leave their origin
    (the hub sends LFS files to a CDN, and presigned URLs refuse a second form of auth)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in ("Authorization", "Cookie"):
                new.remove_header(name)
        return new


_OPENER = urllib.request.build_opener(_SameOriginAuthRedirect)


class Body:
    """The bytes of one file from its start offset, read into the caller's buffer. A read that
    fails becomes SourceError "offline", so the caller keeps the partial file for a resume."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self._name = name

    def readinto(self, buffer: memoryview) -> int:
        try:
            return self._stream.readinto(buffer) or 0
        except (OSError, http.client.HTTPException) as exc:
            raise _network_error(self._name, exc) from exc


def _network_error(name: str, exc: BaseException) -> SourceError:
    # The socket's own words ("Connection refused", "Name or service not known") describe the
    # server's network to whoever reads the download status: they go to the server's log.
    log.warning("network error while downloading %r: %s", name, exc)
    return SourceError("offline", f"network error while downloading {name}; pull again to resume")


@contextmanager
def open_stream(remote: RemoteFile, offset: int) -> Iterator[tuple[int, int | None, Body]]:
    """Yield (start offset actually served, total size if known, body); the total is the one the
    response announces (start + Content-Length) when it announces one, else the declared size.

    The start is ``offset`` when the source honoured the range and 0 when it
    restarted from the beginning, so the caller knows whether to truncate.
    Bodies are read with http.client (urllib), which moves bytes several times
    faster than a pure-Python HTTP stack.
    """
    if remote.url.startswith("file:"):
        fd = _open_regular(local_path(remote.url))
        with open(fd, "rb", buffering=0) as fh:
            fh.seek(offset)
            yield offset, os.fstat(fd).st_size, Body(fh, remote.name)
        return
    headers = dict(remote.headers)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        resp = _OPENER.open(request, timeout=READ_TIMEOUT)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
        if status == 416 and remote.size is not None and offset >= remote.size:
            yield offset, remote.size, Body(io.BytesIO(), remote.name)
            return
        if status in (401, 403):
            raise SourceError("gated", f"access to {remote.name} was refused (HTTP {status})") from None
        if status == 404:
            raise SourceError("not_found", f"{remote.name} was not found at its source (HTTP 404)") from None
        raise SourceError("error", f"downloading {remote.name} failed: HTTP {status}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(remote.name, exc) from exc
    with resp:
        start = offset if resp.status == 206 else 0
        # What this response will send, when it says (the caller holds it against the declared size).
        length = resp.headers.get("content-length")
        total = start + int(length) if length and length.isdigit() else remote.size
        yield start, total, Body(resp, remote.name)


def head_size(remote: RemoteFile) -> int | None:
    """The size the source's HEAD announces (X-Linked-Size, else Content-Length), None if it
    announces none or fails: the limit for a file whose listing declared no size."""
    if remote.url.startswith("file:"):
        return None
    request = urllib.request.Request(remote.url, headers=dict(remote.headers), method="HEAD")
    try:
        with _OPENER.open(request, timeout=OUTBOUND_SECONDS) as resp:
            size = resp.headers.get("x-linked-size") or resp.headers.get("content-length")
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None
    return int(size) if size and size.isdigit() else None


def local_path(uri: str) -> Path:
    """The absolute path a ``file:`` URL names; whether anything is there is not looked at."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise SourceError("bad_input", f"not a local file URL: {uri!r}")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise SourceError("bad_input", f"local file path must be absolute: {uri!r}")
    return path


def local_gguf(uri: str) -> Path:
    """The path of a local file to import, once it is known to be a readable regular file that
    starts like a GGUF. Every other case is one error (``_not_importable``): the caller may be a
    process that cannot read that path itself, and must not learn whether it exists."""
    path = local_path(uri)
    try:
        fd = _open_regular(path)
    except OSError:
        raise _not_importable(path) from None
    try:
        head = os.pread(fd, 4, 0)
    except OSError:
        raise _not_importable(path) from None
    finally:
        os.close(fd)
    if not is_gguf_prefix(head):
        raise _not_importable(path)
    return path


def check_local_gguf(uri: str) -> None:
    """Parse a local GGUF before it is imported. Only files that start like a GGUF get here
    (``local_gguf``), so telling what is wrong with one (truncated, wrong version) is safe."""
    path = local_gguf(uri)
    try:
        read_gguf(path)
    except GGUFError as exc:
        raise SourceError("bad_input", f"{exc}; give a complete .gguf file") from exc
    except OSError:
        raise _not_importable(path) from None


def _open_regular(path: Path) -> int:
    """A read-only descriptor of ``path`` if it is a regular file. O_NONBLOCK: opening a FIFO
    must not wait for a writer; O_NOCTTY: a terminal device must not become ours."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_importable(path: Path) -> SourceError:
    return SourceError(
        "bad_input",
        f"cannot import {path}: the server finds no readable GGUF file there (missing, unreadable,"
        " not a regular file or not a GGUF file); give the path of a .gguf file the server can read",
    )


def _url_filename(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError("bad_input", f"invalid URL {url!r}")
    name = unquote(parts.path.rsplit("/", 1)[-1])
    try:
        safe_relative_name(name)
    except UnsafeName as exc:
        raise SourceError("bad_input", f"URL {url!r} does not end in a usable file name") from exc
    if not name.lower().endswith(".gguf"):
        raise SourceError("bad_input", f"URL {url!r} does not name a .gguf file")
    return name


def _url_file(url: str) -> RemoteFile:
    """What a HEAD of ``url`` says about its file. Every failure reads the same (see the module
    docstring): an HTTP error would tell that something listens on that host and port."""
    name = _url_filename(url)
    try:
        with httpx.Client(follow_redirects=True, timeout=OUTBOUND_TIMEOUT) as client:
            resp = client.head(url)
    except httpx.HTTPError as exc:
        raise _unfetchable(url, exc) from None
    if resp.status_code >= 400:
        raise _unfetchable(url, f"HTTP {resp.status_code}")
    size = resp.headers.get("x-linked-size") or resp.headers.get("content-length")
    etag = (resp.headers.get("x-linked-etag") or "").strip('"').lower()
    return RemoteFile(
        name, int(size) if size and size.isdigit() else None, etag if _SHA256_RE.match(etag) else None, url
    )


def _unfetchable(url: str, detail: object) -> SourceError:
    log.warning("fetching %r failed: %s", url, detail)
    return SourceError(
        "error",
        f"could not fetch {url}: not found, or the server cannot reach it (HTTP or network error, in the"
        " server log); check the URL and pull again",
    )


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _hf_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=_hf_endpoint(), token=_hf_token())


def _hf_search(query: str, limit: int) -> list[str]:
    """Repo ids matching ``query``: one GET with OUTBOUND_TIMEOUT. Not HfApi.list_models, whose
    requests have no timeout and are retried five times."""
    from huggingface_hub.utils import build_hf_headers

    with httpx.Client(timeout=OUTBOUND_TIMEOUT, follow_redirects=True) as client:
        resp = client.get(
            f"{_hf_endpoint()}/api/models",
            params={"search": query, "limit": limit},
            headers=build_hf_headers(token=_hf_token()),
        )
    if resp.status_code >= 400:
        raise SourceError(
            "error", f"the Hugging Face hub at {_hf_endpoint()} answered a search with HTTP {resp.status_code}"
        )
    found = resp.json()
    return [str(m["id"]) for m in found if isinstance(m, dict) and m.get("id")] if isinstance(found, list) else []


def _hf_model(repo_id: str) -> RemoteModel:
    return RemoteModel(repo_id, HUB_HF, repo_id.split("/")[-1], author=repo_id.split("/")[0])


def _hf_info(repo_id: str, *, files: bool, revision: str | None = None) -> Any:
    if "/" not in repo_id or ".." in repo_id:
        raise SourceError("bad_input", f"invalid Hugging Face repo id {repo_id!r}: expected OWNER/NAME")
    try:
        return _hf_api().model_info(repo_id, revision=revision, files_metadata=files, timeout=OUTBOUND_SECONDS)
    except Exception as exc:  # noqa: BLE001
        raise _translate_hf(exc, repo_id) from exc


def _translate_hf(exc: Exception, repo_id: str) -> SourceError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return SourceError(
            "gated", f"{repo_id} is gated on Hugging Face: accept its license and start the server with HF_TOKEN set"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return SourceError("not_found", f"{repo_id} was not found on Hugging Face")
    if isinstance(exc, RevisionNotFoundError):
        return SourceError("not_found", f"revision not found in {repo_id}")
    if isinstance(exc, HFValidationError):
        return SourceError("bad_input", f"invalid Hugging Face repo id {repo_id!r}")
    if isinstance(exc, (OfflineModeIsEnabled, httpx.TransportError, ConnectionError, TimeoutError)) or any(
        # huggingface_hub may ship its own httpx fork (httpx2); match its TransportError by name.
        k.__name__ == "TransportError" and k.__module__.startswith("httpx")
        for k in type(exc).__mro__
    ):
        return SourceError("offline", f"cannot reach the Hugging Face hub at {_hf_endpoint()}")
    return SourceError("error", f"Hugging Face hub error for {repo_id}: {exc}")
