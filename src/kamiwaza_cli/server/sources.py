"""Where weights come from: the Hugging Face hub, local files and plain http(s) URLs.

Each source answers three questions for the rest of the server: which models match a
query (``search``), which files a model has with their sizes and sha256 (``list_files``),
and the bytes of one file from an offset (``open_stream``, for resumable downloads: a body
read with ``readinto``, so the bytes land straight in the download's aligned buffers).
Every failure becomes a ``SourceError`` with a short code the API can report.
The hub is reached through huggingface_hub (``HF_ENDPOINT`` and ``HF_TOKEN`` honoured),
read at call time so a server started with a different environment sees its own.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .store import UnsafeName, safe_relative_name

HUB_HF = "HubsHf"
HUB_FILE = "HubsFile"
HUB_URL = "HubsUrl"

_HF_ALIASES = {"hf", "huggingface", "hubshf"}
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
READ_TIMEOUT = 60.0
TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)


class SourceError(Exception):
    """code: not_found | gated | offline | bad_input | error (maps to an HTTP status in routes/context.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        api = _hf_api()
        found = api.list_models(search=query, limit=max(1, min(limit, 100)))
        return [_hf_model(m.id) for m in found], None
    except SourceError as exc:
        return [], exc
    except Exception as exc:  # noqa: BLE001 - any hub client failure is reported, not raised
        return [], _translate_hf(exc, query)


def lookup(hub: str, repo_id: str) -> RemoteModel:
    if hub == HUB_FILE:
        path = local_path(repo_id)
        return RemoteModel(repo_id, HUB_FILE, path.stem, description=f"Local file {path}")
    if hub == HUB_URL:
        name = _url_filename(repo_id)
        return RemoteModel(repo_id, HUB_URL, Path(name).stem, author=urlsplit(repo_id).hostname)
    if hub != HUB_HF:
        raise SourceError("bad_input", f"unknown hub {hub!r}; this server knows {HUB_HF}, {HUB_FILE}, {HUB_URL}")
    info = _hf_info(repo_id, files=False)
    return RemoteModel(repo_id, HUB_HF, repo_id.split("/")[-1], author=info.author, revision=info.sha)


def list_files(hub: str, repo_id: str, revision: str | None = None) -> list[RemoteFile]:
    if hub == HUB_FILE:
        path = local_path(repo_id)
        return [RemoteFile(path.name, path.stat().st_size, None, path.as_uri())]
    if hub == HUB_URL:
        return [_url_file(repo_id)]
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
    return files


def check_access(remote: RemoteFile) -> None:
    """Fail before anything is registered when a file can't be fetched (gated repo, gone file)."""
    if remote.url.startswith("file:"):
        return
    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client:
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
            raise SourceError("offline", f"network error while downloading {self._name}: {exc}") from exc


@contextmanager
def open_stream(remote: RemoteFile, offset: int) -> Iterator[tuple[int, int | None, Body]]:
    """Yield (start offset actually served, total size if known, body).

    The start is ``offset`` when the source honoured the range and 0 when it
    restarted from the beginning, so the caller knows whether to truncate.
    Bodies are read with http.client (urllib), which moves bytes several times
    faster than a pure-Python HTTP stack.
    """
    if remote.url.startswith("file:"):
        path = local_path(remote.url)
        with path.open("rb", buffering=0) as fh:
            fh.seek(offset)
            yield offset, path.stat().st_size, Body(fh, remote.name)
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
        raise SourceError("offline", f"network error while downloading {remote.name}: {exc}") from exc
    with resp:
        start = offset if resp.status == 206 else 0
        total = remote.size
        length = resp.headers.get("content-length")
        if total is None and length and length.isdigit():
            total = start + int(length)
        yield start, total, Body(resp, remote.name)


def local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise SourceError("bad_input", f"not a local file URL: {uri!r}")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise SourceError("bad_input", f"local file path must be absolute: {uri!r}")
    if not path.is_file():
        raise SourceError("not_found", f"no such file on the server: {path}")
    return path


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
    name = _url_filename(url)
    try:
        with httpx.Client(follow_redirects=True, timeout=TIMEOUT) as client:
            resp = client.head(url)
    except httpx.TransportError as exc:
        raise SourceError("offline", f"cannot reach {urlsplit(url).hostname}: {exc}") from exc
    if resp.status_code == 404:
        raise SourceError("not_found", f"{url} was not found (HTTP 404)")
    if resp.status_code in (401, 403):
        raise SourceError("gated", f"{url} refused access (HTTP {resp.status_code})")
    if resp.status_code >= 400:
        raise SourceError("error", f"{url} answered HTTP {resp.status_code}")
    size = resp.headers.get("x-linked-size") or resp.headers.get("content-length")
    etag = (resp.headers.get("x-linked-etag") or "").strip('"').lower()
    return RemoteFile(name, int(size) if size else None, etag if _SHA256_RE.match(etag) else None, url)


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hf_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _hf_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=_hf_endpoint(), token=_hf_token())


def _hf_model(repo_id: str) -> RemoteModel:
    return RemoteModel(repo_id, HUB_HF, repo_id.split("/")[-1], author=repo_id.split("/")[0])


def _hf_info(repo_id: str, *, files: bool, revision: str | None = None) -> Any:
    if "/" not in repo_id or ".." in repo_id:
        raise SourceError("bad_input", f"invalid Hugging Face repo id {repo_id!r}: expected OWNER/NAME")
    try:
        return _hf_api().model_info(repo_id, revision=revision, files_metadata=files)
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
