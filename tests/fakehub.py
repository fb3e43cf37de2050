"""A fake Hugging Face Hub for tests, served over HTTP on loopback.

The real hub is unreachable from CI and dev machines, so everything in kamiwaza that talks to
huggingface.co (search, model metadata, downloads) is tested against this server instead, by pointing
``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``) at ``FakeHub.url``.

This module owns:

* ``HubFile`` -- one file of a fake repo, backed by a real file on disk, with knobs to break it on
  purpose (corrupt bytes, a lying advertised size, a body longer than the file or one that never
  ends, no size anywhere). Its name is served as given: a hostile listing (``./x`` beside ``x``,
  ``x.incomplete``) is just a repo whose names say so.
* ``FakeHub`` -- the server: repos, gating/tokens, a download rate limit, and a log of what clients asked.

Routes implemented (shaped after huggingface.co as parsed by huggingface_hub 2.4):

* ``GET /api/models?search=&author=&filter=&limit=&full=&expand=``       -> list_models
* ``GET /api/models/{repo}[/revision/{rev}]?blobs=&expand=``             -> model_info / repo_info
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=``      -> list_repo_tree
* ``GET|HEAD /{repo}/resolve/{rev}/{filename}`` (with Range)             -> hf_hub_url, get_hf_file_metadata,
  hf_hub_download, plain httpx GETs

Anything else answers 404 (GET/HEAD) or 501 (other methods) so a test notices it hit an unmodelled route.

Standard library only: the fake must not depend on the HTTP stack it is testing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "HubFile"]

# Body chunk size for /resolve. Under a rate limit chunks shrink (see _send_file) so that a change of
# rate_limit is noticed within ~1/_RATE_TICKS_PER_SECOND seconds even at very low rates.
_CHUNK = 64 * 1024
_RATE_TICKS_PER_SECOND = 20

# Keys huggingface.co returns per model from /api/models by default, and the extra ones with full=true.
_LIST_KEYS = ("_id", "id", "modelId", "likes", "downloads", "tags", "private", "createdAt", "library_name")
_FULL_KEYS = ("author", "sha", "lastModified", "gated", "disabled", "siblings")

_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"


@dataclass
class HubFile:
    """One file in a fake repo. Instances are held by reference, so flipping ``corrupt`` or
    ``size_override`` after ``add_repo`` takes effect on the next request."""

    name: str  # path in repo, e.g. "gemma-3-270m-Q4_K_M.gguf" or "sub/README.md"
    path: pathlib.Path  # real file on disk whose bytes are served
    sha256: str | None = None  # None: computed lazily from `path` (and cached); the true sha is advertised
    lfs: bool = True  # siblings/tree entries get an "lfs" block and /resolve an X-Linked-Etag
    corrupt: bool = False  # serve bytes with the last byte flipped, still advertising the true sha256
    size_override: int | None = None  # size advertised in metadata; real bytes are still what is served
    # Zero bytes sent after the file's own on /resolve (Content-Length counts them unless chunked);
    # None: zeros for ever, chunked, until the client hangs up or the hub stops.
    trailing: int | None = 0
    chunked: bool = False  # frame /resolve bodies with Transfer-Encoding: chunked, no Content-Length
    listed_size: bool = True  # False: the listing gives no size (siblings without "size" and "lfs")
    linked_size: bool = True  # False: /resolve sends no X-Linked-Size


# --- hashing -------------------------------------------------------------------------------------------
# Test suites register the same multi-hundred-MB GGUF in many repos/tests; hash each file once per
# process, keyed on (path, size, mtime) so a rewritten file is re-hashed rather than served stale.
_hash_cache: dict[tuple[str, str, int, int], str] = {}
_hash_lock = threading.Lock()


def _file_digest(path: pathlib.Path, kind: str) -> str:
    """``kind`` is "sha256" (LFS oid) or "gitblob" (git's sha1 of "blob <size>\\0<content>")."""
    st = os.stat(path)
    key = (str(pathlib.Path(path).resolve()), kind, st.st_size, st.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(f"blob {st.st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def _fake_oid(*parts: str) -> str:
    # Stable 40-hex ids (commits, folder oids) so repeated runs see identical metadata.
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")


class _Headers(dict):
    """Request headers as a dict with lower-cased keys and case-insensitive lookups, because clients
    differ in how they spell header names (httpx keeps the caller's casing)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class _Repo:
    repo_id: str
    files: list[HubFile]
    gated: bool
    commit: str
    created: str


class _HubError(Exception):
    """Raised inside a handler to answer with an error response shaped like huggingface.co's."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Unsatisfiable(Exception):
    pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return an inclusive (start, end) for a single ``bytes=`` range, None to ignore the header
    (multi-range or malformed: RFC 9110 lets a server answer those with the full 200), or raise
    _Unsatisfiable (-> 416)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client that never hangs up must not keep the test process alive
    hub: FakeHub

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which does reverse DNS and can stall for
        # seconds on sandboxed machines; loopback needs none of that.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Client hang-ups are routine in download tests; anything else is a fake-hub bug worth keeping.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        self.hub._record_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real hub; every response sets Content-Length
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections eventually free their thread
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read hub.requests instead; stderr noise hides real failures

    # --- plumbing ---------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        self._method = method
        self._started = False
        hub._log_request(method, self.path, _Headers((k.lower(), v) for k, v in self.headers.items()))
        try:
            try:
                self._route(method)
            except _HubError as e:
                self._send_error(e)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # client went away mid-response; nothing to tell anyone
        except Exception:
            hub._record_error(traceback.format_exc())
            if self._started:
                self.close_connection = True  # can't send a status any more; truncation signals failure
            else:
                try:
                    self._send_json(500, {"error": "FakeHub internal error (see FakeHub.errors)"})
                except (ConnectionError, TimeoutError):
                    self.close_connection = True

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self._started = True
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._start(status, {**headers, "Content-Length": str(len(body))})
        if self._method != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send_bytes(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def _send_error(self, e: _HubError) -> None:
        # huggingface_hub's hf_raise_for_status keys its exception classes off X-Error-Code, and quotes
        # X-Error-Message and the body's "error" in the exception text.
        headers = {"X-Error-Message": e.message}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._send_json(e.status, {"error": e.message}, headers)

    # --- routing ----------------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        split = urlsplit(self.path)
        # Split the raw path before unquoting: huggingface_hub sends revisions and tree paths with "/"
        # encoded as %2F and they must stay one segment.
        segs = [unquote(s) for s in split.path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        query = parse_qs(split.query, keep_blank_values=True)
        if method not in ("GET", "HEAD"):
            if "content-length" in self.headers:
                self.rfile.read(int(self.headers["content-length"]))  # keep the connection in sync
            raise _HubError(501, None, f"FakeHub does not implement {method} {split.path}")
        if segs[:2] == ["api", "models"]:
            self._route_api(segs[2:], query)
            return
        for n in (2, 1):  # repo ids are "name" or "owner/name"
            if len(segs) > n + 1 and segs[n] == "resolve":
                repo_id = "/".join(segs[:n])
                rev, filename = segs[n + 1], "/".join(segs[n + 2 :])
                self._resolve(repo_id, rev, filename)
                return
        raise _HubError(404, None, "Not Found")

    def _route_api(self, rest: list[str], query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if not rest or rest == [""]:
            self._list_models(query)
            return
        # Prefer a known "owner/name" over "name" so a repo called e.g. "x/tree" can't be misparsed.
        two = len(rest) >= 2 and (hub._get("/".join(rest[:2])) or rest[1] not in ("revision", "tree"))
        n = 2 if two else 1
        repo_id, tail = "/".join(rest[:n]), rest[n:]
        if not tail:
            self._model_info(repo_id, None, query)
        elif tail[0] == "revision" and len(tail) == 2:
            self._model_info(repo_id, tail[1], query)
        elif tail[0] == "tree" and len(tail) >= 2:
            self._tree(repo_id, tail[1], "/".join(tail[2:]), query)
        else:
            raise _HubError(404, None, "Not Found")

    # --- access checks ----------------------------------------------------------------------------------

    def _repo_for(self, repo_id: str, *, api: bool) -> _Repo:
        hub = self.server.hub
        repo = hub._get(repo_id)
        if repo is None:
            raise _HubError(404, "RepoNotFound", "Repository not found")
        if repo.gated and (not api or hub.gated_api_errors) and not self._authorized():
            sent_token = self.headers.get("Authorization") is not None
            if sent_token:
                msg = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                    f"Visit {hub.url}/{repo_id} to ask for access."
                )
            else:
                msg = (
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in."
                )
            raise _HubError(401 if api else 403, "GatedRepo", msg)
        return repo

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        return scheme.lower() == "bearer" and token.strip() in self.server.hub.tokens

    @staticmethod
    def _check_rev(repo: _Repo, rev: str | None) -> None:
        if rev is None or rev in ("main", "refs/heads/main", repo.commit):
            return
        raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    # --- /api/models ------------------------------------------------------------------------------------

    def _list_models(self, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        search = (query.get("search") or [""])[-1].lower()
        author = (query.get("author") or [""])[-1]
        tag_filter = [t for v in query.get("filter", []) for t in v.split(",") if t]
        limit_raw = (query.get("limit") or [""])[-1]
        limit = int(limit_raw) if limit_raw.isdigit() else None
        full = _truthy((query.get("full") or [None])[-1])
        expand = query.get("expand")
        out = []
        for repo in hub._snapshot():
            if search and search not in repo.repo_id.lower():
                continue
            if author and not repo.repo_id.startswith(author + "/"):
                continue
            entry = self._model_json(repo, blobs=False)
            if tag_filter and not all(t in entry["tags"] for t in tag_filter):
                continue
            keys = list(_LIST_KEYS)
            if full:
                keys += _FULL_KEYS
            if expand:
                keys = ["_id", "id", *expand]
            out.append({k: entry[k] for k in keys if k in entry})
            if limit is not None and len(out) >= limit:
                break
        # No Link header: huggingface_hub's paginate() stops after this one page.
        self._send_json(200, out)

    def _model_info(self, repo_id: str, rev: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo_for(repo_id, api=True)
        self._check_rev(repo, rev)
        # Like huggingface.co, per-file size/blobId/lfs only come with blobs=true (files_metadata=True);
        # otherwise siblings carry just "rfilename".
        entry = self._model_json(repo, blobs=_truthy((query.get("blobs") or [None])[-1]))
        expand = query.get("expand")
        if expand:
            entry = {k: v for k, v in entry.items() if k in ("_id", "id", *expand)}
        self._send_json(200, entry)

    def _model_json(self, repo: _Repo, *, blobs: bool) -> dict[str, Any]:
        siblings = []
        for f in repo.files:
            sib: dict[str, Any] = {"rfilename": f.name}
            if blobs:
                meta = _file_meta(f)
                sib["blobId"] = meta["oid"]
                if f.listed_size:
                    sib["size"] = meta["size"]
                if f.lfs and f.listed_size:
                    sib["lfs"] = {
                        "sha256": meta["sha256"],
                        "size": meta["size"],
                        "pointerSize": meta["pointer_size"],
                    }
            siblings.append(sib)
        return {
            "_id": _fake_oid("id", repo.repo_id)[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": repo.commit,
            "private": False,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["gguf"],
            "library_name": "gguf",
            "lastModified": repo.created,
            "createdAt": repo.created,
            "siblings": siblings,
        }

    def _tree(self, repo_id: str, rev: str, prefix: str, query: dict[str, list[str]]) -> None:
        repo = self._repo_for(repo_id, api=True)
        self._check_rev(repo, rev)
        recursive = _truthy((query.get("recursive") or [None])[-1])
        prefix = prefix.strip("/")
        dirs: set[str] = set()
        for f in repo.files:
            parts = f.name.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        if prefix and prefix not in dirs:
            raise _HubError(404, "EntryNotFound", f'{prefix} does not exist on "{rev}"')
        base = prefix + "/" if prefix else ""

        def wanted(p: str) -> bool:
            return p.startswith(base) and (recursive or "/" not in p[len(base) :])

        out: list[dict[str, Any]] = [
            {"type": "directory", "oid": _fake_oid("tree", repo.repo_id, d), "size": 0, "path": d}
            for d in sorted(dirs)
            if wanted(d)
        ]
        for f in repo.files:
            if not wanted(f.name):
                continue
            meta = _file_meta(f)
            item: dict[str, Any] = {"type": "file", "oid": meta["oid"], "size": meta["size"], "path": f.name}
            if f.lfs:
                size, pointer_size = meta["size"], meta["pointer_size"]
                item["lfs"] = {"oid": meta["sha256"], "size": size, "pointerSize": pointer_size}
            out.append(item)
        self._send_json(200, out)

    # --- /{repo}/resolve/{rev}/{filename} -----------------------------------------------------------------

    def _resolve(self, repo_id: str, rev: str, filename: str) -> None:
        repo = self._repo_for(repo_id, api=False)
        self._check_rev(repo, rev)
        hf = next((f for f in repo.files if f.name == filename), None)
        if hf is None:
            raise _HubError(404, "EntryNotFound", "Entry not found")
        meta = _file_meta(hf)
        real_size = meta["real_size"]
        etag = f'"{meta["sha256"]}"' if hf.lfs else f'"{meta["oid"]}"'
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "X-Repo-Commit": repo.commit,
            "ETag": etag,
            # get_hf_file_metadata takes the size from X-Linked-Size first, so size_override lies here
            # while Content-Length stays truthful (it has to: it frames the HTTP body).
            "X-Linked-Size": str(meta["size"]),
        }
        if not hf.linked_size:
            del headers["X-Linked-Size"]
        if hf.lfs:
            headers["X-Linked-Etag"] = etag
        range_header = self.headers.get("Range")
        try:
            rng = _parse_range(range_header, real_size) if range_header else None
        except _Unsatisfiable:
            self._send_bytes(416, b"", {**headers, "Content-Range": f"bytes */{real_size}"})
            return
        if rng is None:
            status, start, end = 200, 0, real_size - 1
        else:
            status, (start, end) = 206, rng
            headers["Content-Range"] = f"bytes {start}-{end}/{real_size}"
        length = end - start + 1
        chunked = hf.chunked or hf.trailing is None
        if chunked:
            self._start(status, {**headers, "Transfer-Encoding": "chunked"})
        else:
            self._start(status, {**headers, "Content-Length": str(length + (hf.trailing or 0))})
        if self._method == "HEAD":
            return
        self._send_file(hf, start, length, real_size)
        if hf.trailing != 0:
            self._send_trailing(hf)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _emit(self, hf: HubFile, data: bytes) -> None:
        if hf.chunked or hf.trailing is None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)
        self.server.hub._count(len(data))

    def _send_trailing(self, hf: HubFile) -> None:
        """Zeros after the file: ``hf.trailing`` of them, or for ever (None)."""
        hub = self.server.hub
        left = hf.trailing
        block = b"\0" * _CHUNK
        while left is None or left > 0:
            if hub._stopping.is_set():
                self.close_connection = True
                return
            data = block if left is None else block[: min(left, _CHUNK)]
            self._emit(hf, data)
            if left is not None:
                left -= len(data)
            if hub.rate_limit is not None:
                time.sleep(len(data) / max(1, hub.rate_limit))

    def _send_file(self, hf: HubFile, start: int, length: int, real_size: int) -> None:
        hub = self.server.hub
        flip_at = real_size - 1 if hf.corrupt else -1
        sent = 0
        next_t = time.monotonic()
        with open(hf.path, "rb") as fh:
            fh.seek(start)
            while sent < length:
                if hub._stopping.is_set():
                    self.close_connection = True
                    return
                rate = hub.rate_limit  # re-read every chunk so tests can throttle/unthrottle mid-download
                if rate is not None and rate <= 0:
                    time.sleep(1 / _RATE_TICKS_PER_SECOND)  # rate_limit=0 pauses the transfer
                    next_t = time.monotonic()
                    continue
                n = _CHUNK if rate is None else max(1, min(_CHUNK, rate // _RATE_TICKS_PER_SECOND))
                data = fh.read(min(n, length - sent))
                if not data:  # file shrank under us: truncate, the client sees a short body
                    self.close_connection = True
                    return
                pos = start + sent
                if pos <= flip_at < pos + len(data):
                    buf = bytearray(data)
                    buf[flip_at - pos] ^= 0xFF
                    data = bytes(buf)
                t_write = time.monotonic()
                self._emit(hf, data)  # unbuffered (wbufsize=0): goes out now, so throttling is real
                sent += len(data)
                if rate is not None:
                    # Token-bucket without burst: the next chunk may leave len/rate after this one
                    # was allowed to, so throughput never exceeds `rate` over any window.
                    next_t = max(next_t, t_write) + len(data) / rate
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)


def _file_meta(hf: HubFile) -> dict[str, Any]:
    real_size = os.stat(hf.path).st_size
    size = hf.size_override if hf.size_override is not None else real_size
    sha = hf.sha256 or _file_digest(hf.path, "sha256")
    if hf.lfs:
        # For LFS files the git blob is the pointer file, exactly as on huggingface.co.
        pointer = _LFS_POINTER.format(sha=sha, size=size).encode()
        oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
        pointer_size = len(pointer)
    else:
        oid = _file_digest(hf.path, "gitblob")
        pointer_size = 0
    return {"real_size": real_size, "size": size, "sha256": sha, "oid": oid, "pointer_size": pointer_size}


class FakeHub:
    """A Hugging Face Hub look-alike on ``127.0.0.1:<random port>``.

    Usage::

        with FakeHub() as hub:
            hub.add_repo("acme/tiny-GGUF", [HubFile("tiny.gguf", path)])
            monkeypatch.setenv("HF_ENDPOINT", hub.url)   # for subprocesses; in-process use endpoint=

    Attributes tests may read or set at any time:

    * ``rate_limit`` -- bytes/second for /resolve bodies across every download; None = unlimited,
      0 = paused. Re-read for every chunk, so changes apply mid-download (within ~50 ms).
    * ``tokens`` -- set of tokens that unlock gated repos (sent as ``Authorization: Bearer <token>``).
    * ``gated_api_errors`` -- True (default): /api routes of a gated repo answer 401 GatedRepo without a
      valid token. huggingface.co itself serves gated repos' metadata publicly and only gates /resolve;
      set False to get that behaviour.
    * ``requests`` -- (method, raw path incl. query, headers) per request; headers is a dict with
      lower-cased keys and case-insensitive ``[]``/``get``/``in``.
    * ``bytes_served`` -- body bytes written on /resolve (counted per chunk, so it moves mid-download).
    * ``errors`` -- tracebacks of exceptions inside the fake itself (these requests got a 500); a test
      that sees odd 500s should print these.
    """

    def __init__(self) -> None:
        self.rate_limit: int | None = None
        self.tokens: set[str] = set()
        self.gated_api_errors: bool = True
        self.requests: list[tuple[str, str, dict]] = []
        self.bytes_served: int = 0
        self.errors: list[str] = []
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- repos ------------------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: list[HubFile], *, gated: bool = False, commit: str | None = None) -> None:
        """Register (or replace) a model repo. ``commit`` defaults to a stable hash of the repo id."""
        parts = repo_id.split("/")
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ValueError(f"repo_id must be 'name' or 'owner/name', got {repo_id!r}")
        if commit is not None and not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"commit must be 40 lowercase hex characters, got {commit!r}")
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate file names in {repo_id}: {names}")
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        repo = _Repo(repo_id, list(files), gated, commit or _fake_oid("commit", repo_id), created)
        with self._lock:
            self._repos[repo_id] = repo

    def _get(self, repo_id: str) -> _Repo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def _snapshot(self) -> list[_Repo]:
        with self._lock:
            return list(self._repos.values())

    # --- bookkeeping called from handler threads ----------------------------------------------------------

    def _log_request(self, method: str, path: str, headers: dict) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def _record_error(self, tb: str) -> None:
        with self._lock:
            self.errors.append(tb)

    # --- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub not started; call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.hub = self
        self._server = server
        # A short poll interval keeps stop() (hence every test teardown) from waiting up to 0.5 s.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # ends throttled/paused transfers instead of leaving them sleeping
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
