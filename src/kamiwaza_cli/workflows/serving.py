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

from .. import statuses
from ..errors import KamiwazaError, NotFound
from ..platform import Deployment, DeployRefused, Logs, Model, ModelFacts, Platform
from .models import find_model, list_models
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
    name: str
    deployment: Deployment
    endpoint: str
    reused: bool
    model: Model | None = None  # the model record serve found (its files: the chat reads their facts)


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


def find_deployments(
    platform: Platform, text: str, *, active_only: bool = True, deployments: list[Deployment] | None = None
) -> list[Deployment]:
    """Deployments named by deployment id (or unique prefix), model name, repo id or catalog name."""
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
    return [d for d in pool if d.model_id == model.id]


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
    """Pull if needed, reuse a running deployment (one that matches what was asked) or deploy,
    and wait until it answers."""
    models = list_models(platform)
    try:
        model = find_model(platform, text, models)
        ready = model.state in ("ready", "partial")
    except NotFound:
        model, ready = None, False
    if not ready:
        if not pull_if_needed:
            raise NotFound(f"model {text!r} is not downloaded", hint=f"pull it with: kamiwaza pull {text}")
        done = None
        for event in pull(platform, text, models=models):
            yield event
            if isinstance(event, (PullDone, AlreadyDownloaded)):
                done = event
        assert done is not None
        model = done.model
    assert model is not None
    name = model.name

    for d in list_deployments(platform):
        if d.model_id != model.id or d.status not in ACTIVE_STATUSES:
            continue
        if port and d.port != port:
            continue
        if parallel and d.slots not in (None, parallel):
            continue
        if force_cpu and not d.force_cpu:
            continue
        if context and d.context_per_slot != context:
            continue
        if d.status == statuses.DEPLOYED and d.endpoint:
            yield Deployed(name, d, d.endpoint, reused=True, model=model)
            return
        yield from _wait_deployed(platform, name, d.id, timeout, reused=True, model=model)
        return

    try:
        dep_id = platform.deploy(model.id, port=port, parallel=parallel, force_cpu=force_cpu, context=context)
    except DeployRefused as exc:
        raise KamiwazaError(f"cannot deploy {name}: {exc.message}") from exc
    yield from _wait_deployed(platform, name, dep_id, timeout, reused=False, model=model)


def _wait_deployed(
    platform: Platform, name: str, dep_id: str, timeout: float, *, reused: bool, model: Model | None = None
) -> Iterator[Any]:
    from ..errors import DeploymentFailed

    deadline = time.monotonic() + timeout
    last = None
    while True:
        d = platform.deployment(dep_id)
        status = d.status.upper()
        if status != last:
            yield DeployStatus(name, status)
            last = status
        if status == statuses.DEPLOYED and d.endpoint:
            yield Deployed(name, d, d.endpoint, reused=reused, model=model)
            return
        if status in FAILED_STATUSES or status == statuses.STOPPED:
            code = d.error_code or status
            message = d.error_message or "the deployment failed"
            # "<cause> → <next step> | <log lines>" (the local server's form); else the log says more.
            cause, _, next_step = message.split(" | ")[0].partition(" → ")
            if next_step:
                raise DeploymentFailed(f"{name} failed to deploy ({code}): {cause.strip()}", hint=next_step.strip())
            hint = (
                f"pull it again with: kamiwaza pull {name}"
                if code == statuses.MUST_REDOWNLOAD
                else f"see the engine log with: kamiwaza logs {dep_id[:8]}"
            )
            raise DeploymentFailed(
                f"{name} failed to deploy ({code}): {cause}",
                hint=hint,
                log_lines=logs(platform, dep_id)[-10:],
            )
        if time.monotonic() > deadline:
            raise DeploymentFailed(
                f"{name} was not ready after {timeout:.0f} s (status {status})",
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
