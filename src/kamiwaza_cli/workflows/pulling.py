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
from .models import find_model, list_models, resolve_pull_ref, select_variant

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
class PullRequested:
    """The download request is about to go: a Ctrl+C from here until ``PullAccepted`` may leave a
    download the platform started running, without the command having heard that it did."""

    repo_id: str


@dataclass
class PullAccepted:
    """The platform has accepted the download and runs it: from here on, an interrupted command
    leaves it downloading (reported before the model and progress are fetched, which takes a
    few more calls). ``quantization`` is what the tag (or the default) chose; ``defaulted`` when
    no tag was given and the repo has no q6_k, so the default order picked another."""

    repo_id: str
    quantization: str | None = None
    defaulted: bool = False


@dataclass
class PullStarted:
    name: str
    repo_id: str
    files: list[FileProgress]
    attached: bool = False  # True when joining a download already running on the platform
    quantization: str | None = None


@dataclass
class AlreadyDownloaded:
    name: str
    repo_id: str
    model: Model
    quantization: str | None = None


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
    quantization: str | None = None


def pull(
    platform: Platform, text: str, quant: str | None = None, *, models: list[Model] | None = None
) -> Iterator[Any]:
    """Download one quantization of a model on the platform (the tag in ``text`` or ``quant``;
    without one, what is already there, else the default), yielding events until every file of it
    is verified. ``models``: the registered models when the caller has just listed them (``serve``)."""
    models = list_models(platform) if models is None else models
    ref = resolve_pull_ref(platform, text, models)
    if quant and not quantization.is_valid_tag(quant):
        raise UsageError(f"{quant!r} is not a quantization tag (examples: q4_k_m, q6_k, q8_0, iq4_xs, f16, q4)")
    if quant and ref.quant and quantization.normalize(quant) != quantization.normalize(ref.quant):
        raise UsageError(f"two quantizations given: {ref.quant} in the name and {quant} in --quantization")
    target = (quant or ref.quant or "").lower() or None
    repo_id = ref.source
    base = catalog.split_tag(text.strip())[0]

    existing = next((m for m in models if m.repo_id == repo_id), None)
    if existing is not None:
        variant = select_variant(existing, target)
        if variant is not None:
            target = target or variant.quantization  # a repair keeps the quantization it repairs
            if variant.state == "downloading":
                ids = [f.id for f in variant.all_files if f.downloading]
                again = _again(base, variant.quantization)
                yield from _watch(
                    platform, existing.id, existing.name, repo_id, again, ids, quant=variant.quantization, attached=True
                )
                return
            if variant.state == "ready":
                yield AlreadyDownloaded(existing.name, repo_id, existing, variant.quantization)
                return

    yield PullRequested(repo_id)
    started = _initiate(platform, ref, target, base)
    picked = started.choice.quantization if started.choice else target
    yield PullAccepted(repo_id, picked, bool(started.choice and started.choice.defaulted))
    model_id = started.model_id
    if model_id is None:  # a platform that did not say which model it registered: look it up
        found = platform.model_by_repo(repo_id)
        if found is None:
            raise DownloadFailed(f"the platform did not register {repo_id}")
        model_id = found.id
    if started.already_downloaded:
        model = platform.model(model_id)
        yield AlreadyDownloaded(model.name, repo_id, model, picked)
        return
    again = _again(base, picked)
    yield from _watch(
        platform, model_id, started.name, repo_id, again, list(started.files), quant=picked, created=existing is None
    )


def _again(base: str, quant: str | None) -> str:
    """The name to pull again with: the user's, with the quantization it stands for."""
    return f"{base}:{quant}" if quant else base


def _initiate(platform: Platform, ref: ModelRef, target: str | None, base: str) -> DownloadStarted:
    try:
        started = platform.start_download(ref.source, target)
    except UsageError as exc:
        if ref.kind == "repo":  # a repo the platform will not take (the local server: no GGUF in it)
            hint = "pull a GGUF repo (see: kamiwaza list --catalog), or use a cluster: kamiwaza config set-url URL"
        else:
            hint = "check the file or URL (a .gguf is needed), or pull by name: kamiwaza list --catalog"
        exc.hint = exc.hint or hint
        raise
    except QuantizationUnavailable as exc:
        exc.hint = (
            f"try: kamiwaza pull {_again(base, _suggest(exc.available))}"
            if exc.available
            else "tags name GGUF quantizations; this repo has no GGUF files"
        )
        raise
    except ModelUnavailable as exc:
        raise _not_found(ref, exc.hub_message) from exc
    except NotFound as exc:  # the platform's own refusal after listing the repo
        exc.hint = exc.hint or "check the repo on the hub, or pick a model from: kamiwaza list --catalog"
        raise
    if not started.files:
        raise NotFound(
            f"{ref.source} has no files that can be downloaded",
            hint="check the repo on the hub, or pick a model from: kamiwaza list --catalog",
        )
    return started


def _suggest(available: list[str]) -> str:
    """The quantization to suggest instead: the default order's first, else the first listed."""
    order = quantization.DEFAULT_ORDER
    ranked = sorted(available, key=lambda q: order.index(q) if q in order else len(order))
    return ranked[0]


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
    again: str,
    file_ids: list[str],
    *,
    quant: str | None = None,
    attached: bool = False,
    created: bool = False,
) -> Iterator[Any]:
    """Poll until the files are in; ``again`` is the name a hint tells the user to pull again."""
    rows = {r.file_id: r for r in platform.download_status(model_id)}
    files = [_progress(rows[i]) for i in file_ids if i in rows]
    yield PullStarted(name, repo_id, files, attached=attached, quantization=quant)
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
                f"the download of {name} was cancelled", hint=f"start it again with: kamiwaza pull {again}"
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
                f"the download of {name} was cancelled", hint=f"start it again with: kamiwaza pull {again}"
            )
        raise DownloadFailed(reason, hint=f"try again with: kamiwaza pull {again}")
    final = platform.model(model_id)
    yield PullDone(final.name, final.repo_id or repo_id, final, files, quant)


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
    """Cancel the downloads of a model, or with ``:quant`` of that quantization's files only."""
    model = find_model(platform, text)
    _, tag = catalog.split_tag(text.strip())
    variant = select_variant(model, tag) if tag else None
    files = variant.all_files if variant else () if tag else model.files
    active = [f for f in files if f.downloading]
    if not active:
        raise NotFound(f"no download of {model.name} is in progress", hint="see models with: kamiwaza list")
    for f in active:
        platform.cancel_download(f.id)
    return model
