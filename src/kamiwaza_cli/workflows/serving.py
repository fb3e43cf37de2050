"""Serving: deploy a model (pulling it first if needed, reusing a running deployment) and wait until
it answers; find, list and stop deployments; read their engine logs.

``serve`` yields the pull events, then DeployStatus on every status change and Deployed with the
OpenAI endpoint the SDK computes; a failed deployment raises with the tail of its engine log.
Deployments are the port's records, each with its endpoint: reusing a running deployment costs one
model list and one deployment list, nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import catalog, quantization, statuses
from ..errors import KamiwazaError, NotFound
from ..platform import Deployment, DeployRefused, Logs, Model, ModelFacts, Platform
from .models import find_model, list_models, select_variant
from .pulling import AlreadyDownloaded, PullDone, pull

ACTIVE_STATUSES = statuses.ACTIVE
FAILED_STATUSES = statuses.FAILURES
DEPLOY_POLL = 0.2


@dataclass
class DeployStatus:
    name: str
    status: str


@dataclass
class Deployed:
    name: str  # the model's name (what a chat sends as "model")
    deployment: Deployment
    endpoint: str
    reused: bool
    file: str | None = None  # the weight file it serves
    label: str = ""  # NAME:QUANT, for messages
    model: Model | None = None  # the model record serve found (its files: the chat reads their facts)

    def __post_init__(self) -> None:
        self.label = self.label or self.name


def is_base_model(platform: Platform, deployed: Deployed) -> bool:
    """Whether the served model is a base model (ModelFacts.base): then the chat runs it as text
    completion. Unknown facts (a cluster's files) mean a chat model, as every engine assumes."""
    if deployed.model is None:
        return False
    facts: list[ModelFacts] = platform.facts(deployed.model)
    if not facts or not all(f.base for f in facts):
        return False
    # A chat template set in the model's default config (the engine's override) makes it a chat model.
    # Asked only of base models: an instruct model's run costs no extra request.
    configs = platform.model_configs(deployed.model.id)
    return not any(c.default and (c.config.get("chat_template") or c.config.get("chat_format")) for c in configs)


def list_deployments(platform: Platform) -> list[Deployment]:
    """All of them (starting and failed ones too), each with its endpoint when it serves."""
    return platform.deployments()


def file_names(platform: Platform, deployments: list[Deployment]) -> dict[str, str]:
    """The name of the file each deployment serves, by file id: the local server says it in the
    deployment itself; for a platform that does not, one model list fills it in."""
    names = {d.file_id: d.file_name for d in deployments if d.file_id and d.file_name}
    if any(d.file_id and d.file_id not in names for d in deployments):
        names.update({f.id: f.name for m in list_models(platform) for f in m.files})
    return names


def find_deployments(
    platform: Platform, text: str, *, active_only: bool = True, deployments: list[Deployment] | None = None
) -> list[Deployment]:
    """Deployments named by deployment id (or unique prefix), or by a model's name (repo id,
    catalog name, ...), with ``:quant`` only those serving that quantization."""
    deployments = list_deployments(platform) if deployments is None else deployments
    pool = [d for d in deployments if d.status in ACTIVE_STATUSES] if active_only else deployments
    wanted = text.strip().lower()
    by_id = [d for d in pool if d.id.lower() == wanted]
    if not by_id and len(wanted) >= 4:
        by_id = [d for d in pool if d.id.lower().startswith(wanted)]
    if by_id:
        return by_id
    try:
        model = find_model(platform, text)
    except NotFound:
        return [d for d in pool if (d.model_name or "").lower() == wanted]
    mine = [d for d in pool if d.model_id == model.id]
    _, tag = catalog.split_tag(text.strip())
    if tag is None:
        return mine
    variant = select_variant(model, tag)
    ids = {f.id for f in variant.files} if variant else set()
    return [d for d in mine if d.file_id in ids]


def serve(
    platform: Platform,
    text: str,
    *,
    pull_if_needed: bool = True,
    port: int | None = None,
    parallel: int | None = None,
    force_cpu: bool = False,
    context: int | None = None,
    timeout: float = 600.0,
) -> Iterator[Any]:
    """Pull the quantization asked for if needed, reuse a running deployment of it (one that
    matches what was asked) or deploy it, and wait until it answers."""
    models = list_models(platform)
    base, tag = catalog.split_tag(text.strip())
    try:
        model: Model | None = find_model(platform, text, models)
    except NotFound:
        model = None
    variant = select_variant(model, tag) if model is not None else None
    # Files it has that are not downloaded (gone from disk, failed): say so with the pull that repairs
    # them. (Parts never registered at all, as from pulling one part of a split file, the engine names.)
    have_all = variant is not None and all(f.ready for f in variant.all_files)
    if variant is not None and variant.state == "incomplete" and not have_all:
        ready, expected = variant.parts
        missing = ", ".join(f.name for f in variant.all_files if not f.ready) or "split parts"
        again = f"{base}:{variant.quantization}" if variant.quantization else base
        raise KamiwazaError(
            f"{variant.label} is incomplete ({ready} of {expected} files ready; not downloaded: {missing})",
            hint=f"repair it with: kamiwaza pull {again}",
        )
    if variant is None or not have_all:
        if not pull_if_needed:
            raise NotFound(f"{text!r} is not downloaded", hint=f"pull it with: kamiwaza pull {text}")
        done = None
        for event in pull(platform, text, models=models):
            yield event
            if isinstance(event, (PullDone, AlreadyDownloaded)):
                done = event
        assert done is not None
        model = done.model
        variant = select_variant(model, tag or done.quantization)
        if variant is None:
            raise KamiwazaError(f"{done.name} has no {tag or done.quantization} files after the pull")
    assert model is not None and variant is not None
    label = variant.label
    # A repo without GGUF weights (a cluster's vLLM model): the platform picks its own files.
    file_id = variant.first.id if quantization.is_weight(variant.first.name) else None

    running = [
        d
        for d in list_deployments(platform)
        if d.model_id == model.id
        and d.status in ACTIVE_STATUSES
        and not (port and d.port != port)
        and not (parallel and d.slots not in (None, parallel))
        and not (force_cpu and not d.force_cpu)
        and not (context and d.context_per_slot != context)
    ]
    same = [d for d in running if not (file_id and d.file_id and d.file_id != file_id)]
    # No tag: a running deployment of any quantization of the model serves (the default one first).
    reusable = same or ([] if tag else running)
    if reusable:
        d = reusable[0]
        files = {f.id: f.name for f in model.files}
        served = files.get(d.file_id or "", variant.first.name) if d not in same else variant.first.name
        quant = quantization.detect_quantization(served)
        label = f"{model.name}:{quant}" if quant else model.name
        if d.status == statuses.DEPLOYED and d.endpoint:
            yield Deployed(model.name, d, d.endpoint, reused=True, file=served, label=label, model=model)
            return
        yield from _wait_deployed(platform, model.name, label, d.id, timeout, reused=True, file=served, model=model)
        return

    try:
        dep_id = platform.deploy(
            model.id, file_id=file_id, port=port, parallel=parallel, force_cpu=force_cpu, context=context
        )
    except DeployRefused as exc:
        raise KamiwazaError(f"cannot deploy {label}: {exc.message}") from exc
    yield from _wait_deployed(
        platform, model.name, label, dep_id, timeout, reused=False, file=variant.first.name, model=model
    )


def _wait_deployed(
    platform: Platform,
    name: str,
    label: str,
    dep_id: str,
    timeout: float,
    *,
    reused: bool,
    file: str | None = None,
    model: Model | None = None,
) -> Iterator[Any]:
    """Poll a deployment until it serves; ``label`` (NAME:QUANT) is what messages call it."""
    from ..errors import DeploymentFailed

    deadline = time.monotonic() + timeout
    last = None
    while True:
        d = platform.deployment(dep_id)
        status = d.status.upper()
        if status != last:
            yield DeployStatus(label, status)
            last = status
        if status == statuses.DEPLOYED and d.endpoint:
            yield Deployed(name, d, d.endpoint, reused=reused, file=file, label=label, model=model)
            return
        if status in FAILED_STATUSES or status == statuses.STOPPED:
            code = d.error_code or status
            message = d.error_message or "the deployment failed"
            # "<cause> → <next step> | <log lines>" (the local server's form); else the log says more.
            cause, _, next_step = message.split(" | ")[0].partition(" → ")
            if next_step:
                raise DeploymentFailed(f"{label} failed to deploy ({code}): {cause.strip()}", hint=next_step.strip())
            hint = (
                f"pull it again with: kamiwaza pull {label}"
                if code == statuses.MUST_REDOWNLOAD
                else f"see the engine log with: kamiwaza logs {dep_id[:8]}"
            )
            raise DeploymentFailed(
                f"{label} failed to deploy ({code}): {cause}",
                hint=hint,
                log_lines=logs(platform, dep_id)[-10:],
            )
        if time.monotonic() > deadline:
            raise DeploymentFailed(
                f"{label} was not ready after {timeout:.0f} s (status {status})",
                hint=f"see the engine log with: kamiwaza logs {dep_id[:8]}",
            )
        time.sleep(DEPLOY_POLL)


def stop(platform: Platform, text: str | None, *, all_: bool = False) -> list[Deployment]:
    if all_:
        targets = [d for d in list_deployments(platform) if d.status in ACTIVE_STATUSES]
    else:
        assert text is not None
        targets = find_deployments(platform, text)
        if not targets:
            raise NotFound(f"{text!r} is not running", hint="see running models with: kamiwaza ps")
    return stop_deployments(platform, targets)


def stop_deployments(platform: Platform, targets: list[Deployment]) -> list[Deployment]:
    for d in targets:
        platform.stop(d.id)
    return targets


def logs(platform: Platform, dep_id: str) -> list[str]:
    try:
        return list(platform.logs(dep_id).lines)
    except KamiwazaError:
        return []


def log_page(platform: Platform, dep_id: str, *, lines: int | None = None, since: int | None = None) -> Logs:
    """The last ``lines`` lines of a deployment's engine log, or those from position ``since`` on."""
    return platform.logs(dep_id, lines=lines, since=since)


def still_starting(platform: Platform, dep_id: str) -> bool:
    """A deployment that is not writing its log yet but will (queued or being restored)."""
    return platform.deployment(dep_id).status in ACTIVE_STATUSES
