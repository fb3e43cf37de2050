"""Pulling: download a model on the platform and watch its files until every one is verified.

``pull`` yields events (PullAccepted, PullStarted, FileProgress, Stalled, AlreadyDownloaded,
PullDone) and never prints. It polls the platform's raw download status at ``_poll_delay``'s pace
(POLL_INTERVAL, faster when the last bytes are due), turns the platform's errors into
actionable ones and drops a model the pull registered when none of its files made it.
``cancel_pull`` stops the downloads of a model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import catalog, quantization
from ..catalog import ModelRef
from ..errors import AuthError, DownloadFailed, KamiwazaError, NotFound, UsageError
from ..platform import Platform
from .models import _dump, file_ready, find_model, list_models, resolve_pull_ref

POLL_INTERVAL = 0.5
FINAL_POLL_INTERVAL = 0.05  # once the last bytes are due: a finished pull should say so at once
STALL_SECONDS = 30.0


@dataclass
class FileProgress:
    file_id: str
    name: str
    done: int
    total: int | None
    status: str  # downloading | downloaded | failed | cancelled
    speed: float | None = None
    eta: int | None = None


@dataclass
class PullAccepted:
    """The platform has accepted the download and runs it: from here on, an interrupted command
    leaves it downloading (reported before the model and progress are fetched, which takes a
    few more calls)."""

    repo_id: str


@dataclass
class PullStarted:
    name: str
    repo_id: str
    files: list[FileProgress]
    attached: bool = False  # True when joining a download already running on the platform


@dataclass
class AlreadyDownloaded:
    name: str
    repo_id: str
    model: dict[str, Any]


@dataclass
class Stalled:
    name: str
    seconds: float


@dataclass
class PullDone:
    name: str
    repo_id: str
    model: dict[str, Any]
    files: list[FileProgress] = field(default_factory=list)


def pull(platform: Platform, text: str, quant: str | None = None) -> Iterator[Any]:
    """Download a model on the platform, yielding events until every file is verified."""
    models = list_models(platform)
    ref = resolve_pull_ref(platform, text, models)
    if quant and ref.quant and quant.lower() != ref.quant:
        raise UsageError(f"two quantizations given: {ref.quant} in the name and {quant} in --quantization")
    target = (quant or ref.quant or "").lower() or None
    if target and not quantization.is_valid_tag(target):
        raise UsageError(f"{target!r} is not a quantization tag (examples: q4_k_m, q6_k, q8_0)")
    repo_id = ref.source

    existing = next((m for m in models if m.get("repo_modelId") == repo_id), None)
    if existing is not None:
        files = existing.get("m_files") or []
        chosen = [f for f in files if target is None or quantization.matches(f["name"], target)]
        if chosen and any(f.get("is_downloading") for f in chosen):
            ids = [f["id"] for f in chosen if f.get("is_downloading")]
            yield from _watch(platform, existing, ids, attached=True)
            return
        if chosen and all(file_ready(f) for f in chosen):
            yield AlreadyDownloaded(existing["name"], repo_id, existing)
            return

    result = _initiate(platform, ref, target)
    yield PullAccepted(repo_id)
    model = platform.call(platform.client.models.get_model_by_repo_id, repo_id)
    if model is None:
        raise DownloadFailed(f"the platform did not register {repo_id}")
    model_json = _dump(model)
    file_ids = [str(i) for i in (result.get("result") or {}).get("files") or []]
    if (result.get("result") or {}).get("message") == "Files already downloaded":
        yield AlreadyDownloaded(
            model_json["name"], repo_id, _dump(platform.call(platform.client.models.get_model, model_json["id"]))
        )
        return
    yield from _watch(platform, model_json, file_ids, attached=False, created=existing is None)


def _initiate(platform: Platform, ref: ModelRef, target: str | None) -> dict[str, Any]:
    try:
        result = dict(
            platform.call(
                platform.client.models.initiate_model_download,
                ref.source,
                quantization=target or quantization.DEFAULT_QUANTIZATION,
            )
        )
    except UsageError as exc:
        exc.hint = exc.hint or "check the file or URL (a .gguf is needed), or pull by name: kamiwaza list --catalog"
        raise
    except ValueError as exc:
        text = str(exc)
        if "Available quantizations" in text or "No compatible files" in text:
            available = text.split("Available quantizations:", 1)[-1].strip() if "Available" in text else "none"
            raise NotFound(
                f"{ref.source} has no {target} files; available quantizations: {available}",
                hint=f"try: kamiwaza pull {ref.source}:{available.split(',')[0].strip()}",
            ) from exc
        raise _diagnose_missing(platform, ref) from exc
    if not (result.get("result") or {}).get("files"):
        raise NotFound(
            f"{ref.source} has no files that can be downloaded",
            hint="check the repo on the hub, or pick a model from: kamiwaza list --catalog",
        )
    return result


def _diagnose_missing(platform: Platform, ref: ModelRef) -> KamiwazaError:
    """Why the platform found no such model: ask its search for the hub's own error."""
    try:
        found = platform.request("POST", "/models/search/", json={"query": ref.source, "exact": False, "limit": 10})
    except KamiwazaError:
        found = {}
    found = found or {}
    code, message = found.get("hub_error_code"), found.get("hub_error")
    if code == "gated":
        return AuthError(
            message or f"{ref.source} is gated", hint="accept the license on the hub, then set HF_TOKEN for the server"
        )
    if code == "offline":
        return DownloadFailed(
            message or "the platform cannot reach the hub",
            hint="check the server's network (or HF_ENDPOINT), then pull again",
        )
    if code == "bad_input":
        return UsageError(message or f"invalid model {ref.source!r}")
    if ref.kind == "file":
        return NotFound(message or f"the platform cannot read {ref.source}")
    suggestions = catalog.suggest(ref.text, [])
    msg = message or f"{ref.source} was not found"
    if suggestions and ref.friendly is None:
        msg += f"; did you mean: {', '.join(suggestions)}?"
    return NotFound(msg, hint="check the name on the hub, or pick one from: kamiwaza list --catalog")


def _status_rows(platform: Platform, model_id: str) -> list[dict[str, Any]]:
    # Raw rows: the SDK's check_download_status swallows errors and drops the extra
    # fields (bytes, error text) the local server adds.
    rows = platform.request("GET", "/model_files/download_status/", params={"model_ids": [model_id]})
    return rows if isinstance(rows, list) else []


def _progress(row: dict[str, Any]) -> FileProgress:
    total = row.get("size")
    status = "downloading" if row.get("is_downloading") else ("downloaded" if file_ready(row) else "failed")
    if row.get("download_error") == "cancelled" or (
        not row.get("is_downloading") and row.get("download_cancelled_at") and not row.get("storage_location")
    ):
        status = "cancelled"
    done = row.get("bytes_downloaded")
    if done is None:
        pct = row.get("download_percentage") or 0
        done = int(total * pct / 100) if total else 0
    return FileProgress(
        str(row["id"]), row["name"], int(done), total, status, row.get("download_speed"), row.get("download_eta")
    )


def _watch(
    platform: Platform, model: dict[str, Any], file_ids: list[str], *, attached: bool, created: bool = False
) -> Iterator[Any]:
    rows = {str(r["id"]): r for r in _status_rows(platform, model["id"])}
    files = [_progress(rows[i]) for i in file_ids if i in rows]
    yield PullStarted(model["name"], model["repo_modelId"], files, attached=attached)
    last_change = time.monotonic()
    last_done = sum(f.done for f in files)
    while True:
        rows = {str(r["id"]): r for r in _status_rows(platform, model["id"])}
        missing = [i for i in file_ids if i not in rows]
        if missing:
            raise DownloadFailed(
                f"the download of {model['name']} was cancelled",
                hint=f"start it again with: kamiwaza pull {model['repo_modelId']}",
            )
        files = [_progress(rows[i]) for i in file_ids]
        for f in files:
            yield f
        done = sum(f.done for f in files)
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change >= STALL_SECONDS:
            yield Stalled(model["name"], time.monotonic() - last_change)
            last_change = time.monotonic()
        if all(f.status != "downloading" for f in files):
            break
        time.sleep(_poll_delay(files))
    failed = [(f, rows[f.file_id]) for f in files if f.status != "downloaded"]
    if failed:
        f, row = failed[0]
        reason = row.get("download_error") or "the download stopped before the file was complete"
        if created:
            _drop_if_empty(platform, model["id"])
        if f.status == "cancelled":
            raise DownloadFailed(
                f"the download of {model['name']} was cancelled",
                hint=f"start it again with: kamiwaza pull {model['repo_modelId']}",
            )
        raise DownloadFailed(reason, hint=f"try again with: kamiwaza pull {model['repo_modelId']}")
    final = _dump(platform.call(platform.client.models.get_model, model["id"]))
    yield PullDone(final["name"], final["repo_modelId"], final, files)


def _poll_delay(files: list[FileProgress]) -> float:
    """Seconds until the next status poll: POLL_INTERVAL, or less when the remaining bytes are due
    sooner (from the speed the platform reports) or are all in and being verified."""
    due = []
    for f in files:
        if f.status != "downloading" or not f.total:
            continue
        if f.done >= f.total:
            return FINAL_POLL_INTERVAL
        if f.speed:
            due.append((f.total - f.done) / f.speed)
    if due:
        return min(POLL_INTERVAL, max(FINAL_POLL_INTERVAL, max(due)))
    return POLL_INTERVAL


def _drop_if_empty(platform: Platform, model_id: str) -> None:
    """Remove a model this pull registered when none of its files made it (nothing half-registered)."""
    try:
        model = _dump(platform.call(platform.client.models.get_model, model_id))
    except KamiwazaError:
        return
    files = model.get("m_files") or []
    if not any(file_ready(f) or f.get("is_downloading") for f in files):
        platform.call(platform.client.models.delete_model, model_id)


def cancel_pull(platform: Platform, text: str) -> dict[str, Any]:
    model = find_model(platform, text)
    active = [f for f in model.get("m_files") or [] if f.get("is_downloading")]
    if not active:
        raise NotFound(f"no download of {model['name']} is in progress", hint="see models with: kamiwaza list")
    for f in active:
        platform.request("DELETE", f"/model_files/{f['id']}/download")
    return model
