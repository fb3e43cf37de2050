"""Serving: deploy a model (pulling it first if needed, reusing a running deployment) and wait until
it answers; find, list and stop deployments; read their engine logs.

``serve`` yields the pull events, then DeployStatus on every status change and Deployed with the
OpenAI endpoint the SDK computes; a failed deployment raises with the tail of its engine log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import KamiwazaError, NotFound
from ..platform import Platform
from .models import find_model, list_models, model_state
from .pulling import AlreadyDownloaded, PullDone, pull

ACTIVE_STATUSES = ("REQUESTED", "DEPLOYING", "INITIALIZING", "DEPLOYED")
FAILED_STATUSES = ("FAILED", "ERROR", "MUST_REDOWNLOAD")
DEPLOY_POLL = 0.2


@dataclass
class DeployStatus:
    name: str
    status: str


@dataclass
class Deployed:
    name: str
    deployment: dict[str, Any]
    endpoint: str
    reused: bool


def list_deployments(platform: Platform) -> list[dict[str, Any]]:
    # All of them, not list_active_deployments: that one hides starting and failed ones.
    return platform.deployments()


def endpoint_of(platform: Platform, deployment: dict[str, Any]) -> str | None:
    """The OpenAI endpoint the SDK computes for a deployment (gateway path, or direct port)."""
    for active in platform.call(platform.client.serving.list_active_deployments):
        if str(active.id) == str(deployment["id"]):
            return str(active.endpoint) if active.endpoint else None
    return None


def find_deployments(platform: Platform, text: str, *, active_only: bool = True) -> list[dict[str, Any]]:
    """Deployments named by deployment id (or unique prefix), model name, repo id or catalog name."""
    deployments = list_deployments(platform)
    pool = [d for d in deployments if d.get("status") in ACTIVE_STATUSES] if active_only else deployments
    wanted = text.strip().lower()
    by_id = [d for d in pool if str(d["id"]).lower() == wanted]
    if not by_id and len(wanted) >= 4:
        by_id = [d for d in pool if str(d["id"]).lower().startswith(wanted)]
    if by_id:
        return by_id
    try:
        model = find_model(platform, text)
    except NotFound:
        return [d for d in pool if (d.get("m_name") or "").lower() == wanted]
    return [d for d in pool if str(d.get("m_id")) == str(model["id"])]


def serve(
    platform: Platform,
    text: str,
    *,
    pull_if_needed: bool = True,
    port: int | None = None,
    parallel: int | None = None,
    force_cpu: bool = False,
    timeout: float = 600.0,
) -> Iterator[Any]:
    """Pull if needed, reuse a running deployment (one that matches what was asked) or deploy,
    and wait until it answers."""
    models = list_models(platform)
    try:
        model = find_model(platform, text, models)
        ready = model_state(model) in ("ready", "partial")
    except NotFound:
        model, ready = None, False
    if not ready:
        if not pull_if_needed:
            raise NotFound(f"model {text!r} is not downloaded", hint=f"pull it with: kamiwaza pull {text}")
        done = None
        for event in pull(platform, text):
            yield event
            if isinstance(event, (PullDone, AlreadyDownloaded)):
                done = event
        assert done is not None
        model = done.model
    assert model is not None
    name = model["name"]

    for d in list_deployments(platform):
        if str(d.get("m_id")) != str(model["id"]) or d.get("status") not in ACTIVE_STATUSES:
            continue
        if port and d.get("lb_port") != port:
            continue
        if parallel and d.get("max_concurrent_requests") not in (None, parallel):
            continue
        if force_cpu and not d.get("force_cpu"):
            continue
        if d["status"] == "DEPLOYED":
            endpoint = endpoint_of(platform, d)
            if endpoint:
                yield Deployed(name, d, endpoint, reused=True)
                return
        yield from _wait_deployed(platform, name, str(d["id"]), timeout, reused=True)
        return

    kwargs: dict[str, Any] = {"model_id": model["id"], "wait": False}
    if port:
        kwargs["lb_port"] = port
    if parallel:
        kwargs["max_concurrent_requests"] = parallel
    if force_cpu:
        kwargs["force_cpu"] = True
    try:
        dep_id = platform.call(platform.client.serving.deploy_model, **kwargs)
    except ValueError as exc:  # the SDK's own checks (no config, bad ids)
        raise KamiwazaError(f"cannot deploy {name}: {exc}") from exc
    yield from _wait_deployed(platform, name, str(dep_id), timeout, reused=False)


def _wait_deployed(platform: Platform, name: str, dep_id: str, timeout: float, *, reused: bool) -> Iterator[Any]:
    from ..errors import DeploymentFailed

    deadline = time.monotonic() + timeout
    last = None
    while True:
        d = platform.deployment(dep_id)
        status = str(d.get("status") or "").upper()
        if status != last:
            yield DeployStatus(name, status)
            last = status
        if status == "DEPLOYED":
            endpoint = endpoint_of(platform, d)
            if endpoint:
                yield Deployed(name, d, endpoint, reused=reused)
                return
        if status in FAILED_STATUSES or status == "STOPPED":
            code = d.get("last_error_code") or status
            message = d.get("last_error_message") or "the deployment failed"
            hint = (
                f"pull it again with: kamiwaza pull {name}"
                if code == "MUST_REDOWNLOAD"
                else f"see the engine log with: kamiwaza logs {dep_id[:8]}"
            )
            raise DeploymentFailed(
                f"{name} failed to deploy ({code}): {message.split(' | ')[0]}",
                hint=hint,
                log_lines=logs(platform, dep_id)[-10:],
            )
        if time.monotonic() > deadline:
            raise DeploymentFailed(
                f"{name} was not ready after {timeout:.0f} s (status {status})",
                hint=f"see the engine log with: kamiwaza logs {dep_id[:8]}",
            )
        time.sleep(DEPLOY_POLL)


def stop(platform: Platform, text: str | None, *, all_: bool = False) -> list[dict[str, Any]]:
    if all_:
        targets = [d for d in list_deployments(platform) if d.get("status") in ACTIVE_STATUSES]
    else:
        assert text is not None
        targets = find_deployments(platform, text)
        if not targets:
            raise NotFound(f"{text!r} is not running", hint="see running models with: kamiwaza ps")
    return stop_deployments(platform, targets)


def stop_deployments(platform: Platform, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for d in targets:
        platform.call(platform.client.serving.stop_deployment, deployment_id=d["id"])
    return targets


def logs(platform: Platform, dep_id: str) -> list[str]:
    try:
        return list(platform.call(platform.client.serving.get_deployment_logs, dep_id).logs)
    except KamiwazaError:
        return []


def log_snapshot(platform: Platform, dep_id: str) -> tuple[list[str], int, bool]:
    r = platform.call(platform.client.serving.get_deployment_logs, dep_id)
    return list(r.logs), int(r.total_lines_seen), bool(r.capture_active)
