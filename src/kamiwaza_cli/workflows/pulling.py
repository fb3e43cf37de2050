"""Pulling: download a model on the platform and watch its files until every one is verified.

``pull`` yields events (PullAccepted, PullStarted, FileProgress, Stalled, AlreadyDownloaded,
PullDone) and never prints. It polls the platform's download status at ``_poll_delay``'s pace
(POLL_INTERVAL, faster when the last bytes are due), turns the platform's refusals into
actionable errors and drops a model the pull registered when none of its files made it. A new pull
lists the models once, asks for the download, polls, and reads the finished model once.
``cancel_pull`` stops the downloads of a model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import catalog, quantization
from ..catalog import ModelRef
from ..errors import DownloadFailed, KamiwazaError, NotFound, UsageError
from ..platform import DownloadStarted, DownloadStatus, Model, ModelUnavailable, Platform, QuantizationUnavailable
from .models import find_model, list_models, resolve_pull_ref

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
    model: Model


@dataclass
class Stalled:
    name: str
    seconds: float


@dataclass
class PullDone:
    name: str
    repo_id: str
    model: Model
    files: list[FileProgress] = field(default_factory=list)


def pull(
    platform: Platform, text: str, quant: str | None = None, *, models: list[Model] | None = None
) -> Iterator[Any]:
    """Download a model on the platform, yielding events until every file is verified. ``models``:
    the registered models when the caller has just listed them (``serve``), to list them once."""
    models = list_models(platform) if models is None else models
    ref = resolve_pull_ref(platform, text, models)
    if quant and ref.quant and quant.lower() != ref.quant:
        raise UsageError(f"two quantizations given: {ref.quant} in the name and {quant} in --quantization")
    target = (quant or ref.quant or "").lower() or None
    if target and not quantization.is_valid_tag(target):
        raise UsageError(f"{target!r} is not a quantization tag (examples: q4_k_m, q6_k, q8_0)")
    repo_id = ref.source

    existing = next((m for m in models if m.repo_id == repo_id), None)
    if existing is not None:
        chosen = [f for f in existing.files if target is None or quantization.matches(f.name, target)]
        if chosen and any(f.downloading for f in chosen):
            ids = [f.id for f in chosen if f.downloading]
            yield from _watch(platform, existing.id, existing.name, repo_id, ids, attached=True)
            return
        if chosen and all(f.ready for f in chosen):
            yield AlreadyDownloaded(existing.name, repo_id, existing)
            return

    started = _initiate(platform, ref, target)
    yield PullAccepted(repo_id)
    model_id = started.model_id
    if model_id is None:  # a platform that did not say which model it registered: look it up
        found = platform.model_by_repo(repo_id)
        if found is None:
            raise DownloadFailed(f"the platform did not register {repo_id}")
        model_id = found.id
    if started.already_downloaded:
        model = platform.model(model_id)
        yield AlreadyDownloaded(model.name, repo_id, model)
        return
    yield from _watch(platform, model_id, started.name, repo_id, list(started.files), created=existing is None)


def _initiate(platform: Platform, ref: ModelRef, target: str | None) -> DownloadStarted:
    try:
        started = platform.start_download(ref.source, target or quantization.DEFAULT_QUANTIZATION)
    except UsageError as exc:
        exc.hint = exc.hint or "check the file or URL (a .gguf is needed), or pull by name: kamiwaza list --catalog"
        raise
    except QuantizationUnavailable as exc:
        first = exc.available[0] if exc.available else "none"
        exc.hint = f"try: kamiwaza pull {ref.source}:{first}"
        raise
    except ModelUnavailable as exc:
        raise _not_found(ref, exc.hub_message) from exc
    if not started.files:
        raise NotFound(
            f"{ref.source} has no files that can be downloaded",
            hint="check the repo on the hub, or pick a model from: kamiwaza list --catalog",
        )
    return started


def _not_found(ref: ModelRef, message: str | None) -> KamiwazaError:
    """The platform has no such model: say so with the hub's reason, or suggest a catalog name."""
    if ref.kind == "file":
        return NotFound(message or f"the platform cannot read {ref.source}")
    suggestions = catalog.suggest(ref.text, [])
    msg = message or f"{ref.source} was not found"
    if suggestions and ref.friendly is None:
        msg += f"; did you mean: {', '.join(suggestions)}?"
    return NotFound(msg, hint="check the name on the hub, or pick one from: kamiwaza list --catalog")


def _progress(row: DownloadStatus) -> FileProgress:
    return FileProgress(row.file_id, row.name, row.done, row.size, row.state, row.speed, row.eta)


def _watch(
    platform: Platform,
    model_id: str,
    name: str,
    repo_id: str,
    file_ids: list[str],
    *,
    attached: bool = False,
    created: bool = False,
) -> Iterator[Any]:
    rows = {r.file_id: r for r in platform.download_status(model_id)}
    files = [_progress(rows[i]) for i in file_ids if i in rows]
    yield PullStarted(name, repo_id, files, attached=attached)
    last_change = time.monotonic()
    last_done = sum(f.done for f in files)
    first = True
    while True:
        if not first:  # the first round uses the status PullStarted was built from
            rows = {r.file_id: r for r in platform.download_status(model_id)}
        first = False
        missing = [i for i in file_ids if i not in rows]
        if missing:
            raise DownloadFailed(
                f"the download of {name} was cancelled", hint=f"start it again with: kamiwaza pull {repo_id}"
            )
        files = [_progress(rows[i]) for i in file_ids]
        for f in files:
            yield f
        done = sum(f.done for f in files)
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change >= STALL_SECONDS:
            yield Stalled(name, time.monotonic() - last_change)
            last_change = time.monotonic()
        if all(f.status != "downloading" for f in files):
            break
        time.sleep(_poll_delay(files))
    failed = [(f, rows[f.file_id]) for f in files if f.status != "downloaded"]
    if failed:
        f, row = failed[0]
        reason = row.error or "the download stopped before the file was complete"
        if created:
            _drop_if_empty(platform, model_id)
        if f.status == "cancelled":
            raise DownloadFailed(
                f"the download of {name} was cancelled", hint=f"start it again with: kamiwaza pull {repo_id}"
            )
        raise DownloadFailed(reason, hint=f"try again with: kamiwaza pull {repo_id}")
    final = platform.model(model_id)
    yield PullDone(final.name, final.repo_id or repo_id, final, files)


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
        model = platform.model(model_id)
    except KamiwazaError:
        return
    if not any(f.ready or f.downloading for f in model.files):
        platform.delete_model(model_id)


def cancel_pull(platform: Platform, text: str) -> Model:
    model = find_model(platform, text)
    active = [f for f in model.files if f.downloading]
    if not active:
        raise NotFound(f"no download of {model.name} is in progress", hint="see models with: kamiwaza list")
    for f in active:
        platform.cancel_download(f.id)
    return model
