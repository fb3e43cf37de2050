"""Domain steps the commands are made of: connect, resolve names, pull, cancel, remove.

Workflows talk to a ``Platform`` and yield progress *events* (plain dataclasses);
they never print. Only ``cli/`` turns events into bars and lines, so the same steps
serve the human output, ``--json`` and ``kamiwaza run``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import catalog, config, quantization
from .catalog import ModelRef
from .errors import AuthError, Conflict, DownloadFailed, KamiwazaError, NotFound, UsageError
from .platform import Platform

POLL_INTERVAL = 0.5
FINAL_POLL_INTERVAL = 0.05  # once the last bytes are due: a finished pull should say so at once
STALL_SECONDS = 30.0


# Connecting


@dataclass(frozen=True)
class ServerStarted:
    url: str


def connect(
    url_flag: str | None = None,
    *,
    platform_flag: str | None = None,
    insecure: bool = False,
    ca_bundle: str | None = None,
    autostart: bool = True,
    anonymous: bool = False,
) -> tuple[Platform, ServerStarted | None]:
    """The platform chosen by --url > --platform > KAMIWAZA_BASE_URL > KAMIWAZA_PLATFORM > config file > local.

    The credentials are the platform's: KAMIWAZA_API_KEY as the SDK reads it, else the
    token ``kamiwaza login`` stored for this URL (refreshed when it is about to expire).
    The local server is started when it is the chosen platform and not running, so
    ``kamiwaza pull`` works on a fresh laptop with nothing else set up.
    """
    resolved = config.base_url(url_flag, platform_flag)
    url = resolved.value or config.local_url()
    is_local = url == config.local_url()
    started = None
    if is_local and url_flag is None and not os.environ.get("KAMIWAZA_BASE_URL"):
        from .server import control

        running = control.status(config.home())
        if running is not None:
            url = running.url  # the local server started with another --port (or TLS) is still "local"
        elif autostart and not control.ping(url, timeout=1.0):
            control.start(config.home(), port=config.local_port())
            started = ServerStarted(url)
    verify, bundle = config.tls_verify(insecure, ca_bundle)
    platform = Platform(
        url,
        is_local=is_local,
        debug=config.debug_enabled(),
        verify=verify,
        ca_bundle=bundle,
        timeout=config.request_timeout(),
    )
    if not anonymous:
        platform.api_key = config.resolve("api_key").value or stored_token(platform) or _loopback_token(url)
    return platform, started


def stored_token(platform: Platform) -> str | None:
    """The access token ``kamiwaza login`` saved for this platform, refreshed if it expires soon."""
    from . import credentials

    record = credentials.load(platform.url)
    if record is None:
        return None
    if not credentials.is_expired(record):
        return str(record["access_token"])
    if record.get("refresh_token"):
        try:
            fresh = platform.refresh(str(record["refresh_token"]))
        except KamiwazaError:
            fresh = None
        if fresh is not None:
            credentials.save(
                platform.url,
                credentials.record_from_token_response(
                    fresh, record.get("username"), str(record.get("kind") or "password")
                ),
            )
            return str(fresh.access_token)
    credentials.delete(platform.url)
    raise AuthError(f"your session on {platform.url} has expired", hint="log in again with: kamiwaza login")


def _loopback_token(url: str) -> str | None:
    """A placeholder bearer for a loopback platform with no key: the SDK's OpenAI client
    refuses to work without a token, and a keyless local server ignores it."""
    from urllib.parse import urlsplit

    return "local" if urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1") else None


# Names


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else dict(obj)


def list_models(platform: Platform) -> list[dict[str, Any]]:
    models = platform.call(platform.client.models.list_models, load_files=True)
    return [_dump(m) for m in models]


def file_ready(f: dict[str, Any]) -> bool:
    """The SDK's readiness rule: stored, not downloading, not queued again."""
    return bool(f.get("storage_location")) and not f.get("is_downloading") and f.get("dl_requested_at") is None


def model_state(model: dict[str, Any]) -> str:
    files = model.get("m_files") or []
    if any(f.get("is_downloading") for f in files):
        return "downloading"
    if files and all(file_ready(f) for f in files):
        return "ready"
    if any(file_ready(f) for f in files):
        return "partial"
    return "incomplete"


def find_model(platform: Platform, text: str, models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A registered model named by friendly name, repo id, path/URL, model name or id prefix."""
    models = list_models(platform) if models is None else models
    wanted = text.strip()
    try:
        ref = catalog.parse(wanted)
        keys = {ref.source.lower(), ref.text.lower()}
        if ref.quant:
            keys.add(ref.text.rsplit(":", 1)[0].lower())
    except UsageError:
        ref = None
        keys = {wanted.lower()}
    for m in models:
        if (m.get("repo_modelId") or "").lower() in keys or (m.get("name") or "").lower() in keys:
            return m
    if len(wanted) >= 4:
        by_id = [m for m in models if str(m.get("id", "")).lower().startswith(wanted.lower())]
        if len(by_id) == 1:
            return by_id[0]
    known = [m["name"] for m in models if m.get("name")]
    suggestions = catalog.suggest(wanted, known)
    msg = f"model {wanted!r} is not downloaded"
    if suggestions:
        msg += f"; did you mean: {', '.join(suggestions)}?"
    hint = (
        f"pull it with: kamiwaza pull {wanted}"
        if ref is not None and ref.kind in ("repo", "url")
        else "see models with: kamiwaza list"
    )
    raise NotFound(msg, hint=hint)


def resolve_pull_ref(platform: Platform, text: str, models: list[dict[str, Any]]) -> ModelRef:
    ref = catalog.parse(text)
    if ref.kind == "file" and not platform.is_local:
        raise UsageError(
            "local files can only be pulled into the local server",
            hint="copy the file to the platform, or pull by repo id",
        )
    if ref.kind != "name":
        return ref
    model = None
    for m in models:
        if (m.get("name") or "").lower() == ref.source.lower():
            model = m
    if model is None:
        suggestions = catalog.suggest(ref.source, [m["name"] for m in models if m.get("name")])
        msg = f"unknown model {ref.source!r}"
        if suggestions:
            msg += f"; did you mean: {', '.join(suggestions)}?"
        raise NotFound(msg, hint="use a catalog name, OWNER/REPO, a .gguf path or URL; see: kamiwaza list --catalog")
    return ModelRef(ref.text, "repo", model["repo_modelId"], ref.quant)


# Pulling


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
    """The download request is on its way to the platform: from here on, an interrupted command
    may leave the platform downloading."""

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

    yield PullRequested(repo_id)
    result = _initiate(platform, ref, target)
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


def remove(platform: Platform, texts: list[str], force: bool = False) -> list[dict[str, Any]]:
    models = list_models(platform)
    targets = [find_model(platform, t, models) for t in texts]  # resolve all first: no partial rm on a typo
    active = [d for d in list_deployments(platform) if d.get("status") in ACTIVE_STATUSES]
    for m in targets:
        using = [d for d in active if str(d.get("m_id")) == str(m["id"])]
        if using and not force:
            raise Conflict(
                f"{m['name']} is used by deployment {str(using[0]['id'])[:8]} ({using[0]['status']})",
                hint=f"stop it first with: kamiwaza stop {m['name']} (or: kamiwaza rm --force {m['name']})",
            )
    for m in targets:
        stop_deployments(platform, [d for d in active if str(d.get("m_id")) == str(m["id"])])
        platform.call(platform.client.models.delete_model, m["id"])
    return targets


# Describing


def describe(platform: Platform, text: str) -> dict[str, Any]:
    """Everything ``show`` prints about a registered model, as stable JSON-ready data."""
    model = find_model(platform, text)
    full = _dump(platform.call(platform.client.models.get_model, model["id"]))
    full_files = full.get("m_files") or []
    configs = [_dump(c) for c in platform.call(platform.client.models.get_model_configs, full["id"])]
    available: list[str] = []
    if full.get("hub") and full.get("repo_modelId"):
        try:
            hub_files = platform.call(
                platform.client.models.search_hub_model_files, {"hub": full["hub"], "model": full["repo_modelId"]}
            )
            available = quantization.available_quantizations([f.name for f in hub_files])
        except KamiwazaError:
            available = []  # the hub may be offline; show what is known locally
    files = []
    gguf_facts = []
    for f in full_files:
        status = "downloaded" if file_ready(f) else ("downloading" if f.get("is_downloading") else "not downloaded")
        files.append(
            {"id": f.get("id"), "name": f["name"], "size": f.get("size"), "sha256": f.get("checksum"), "status": status}
        )
        if platform.is_local and file_ready(f) and f["name"].lower().endswith(".gguf"):
            gguf_facts.extend(_gguf_facts(f))
    ready_names = [f["name"] for f in full_files if file_ready(f)]
    return {
        "model": {
            "id": full.get("id"),
            "name": full.get("name"),
            "repo_id": full.get("repo_modelId"),
            "hub": full.get("hub"),
            "status": model_state(full),
            "quantizations": quantization.available_quantizations(ready_names),
        },
        "files": files,
        "quantizations_available": available or quantization.available_quantizations([f["name"] for f in full_files]),
        "configs": [
            {"id": c.get("id"), "name": c.get("name"), "default": c.get("default"), "config": c.get("config")}
            for c in configs
        ],
        "gguf": gguf_facts,
    }


def _gguf_facts(f: dict[str, Any]) -> list[dict[str, Any]]:
    from .gguf import GGUFError, read_gguf

    try:
        info = read_gguf(f["storage_location"])
    except (GGUFError, OSError):
        return []
    return [
        {
            "file": f["name"],
            "architecture": info.architecture,
            "parameters": info.parameter_count,
            "context_length": info.context_length,
            "quantization": info.quantization,
            "chat_template": info.has_chat_template,
        }
    ]


# Serving

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
    # list_deployments, not list_active_deployments: the latter hides starting and failed ones.
    return [_dump(d) for d in platform.call(platform.client.serving.list_deployments)]


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
    platform: Platform, text: str, *, pull_if_needed: bool = True, port: int | None = None, timeout: float = 600.0
) -> Iterator[Any]:
    """Pull if needed, reuse a running deployment or deploy, and wait until it answers."""
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
    try:
        dep_id = platform.call(platform.client.serving.deploy_model, **kwargs)
    except ValueError as exc:  # the SDK's own checks (no config, bad ids)
        raise KamiwazaError(f"cannot deploy {name}: {exc}") from exc
    yield from _wait_deployed(platform, name, str(dep_id), timeout, reused=False)


def _wait_deployed(platform: Platform, name: str, dep_id: str, timeout: float, *, reused: bool) -> Iterator[Any]:
    from .errors import DeploymentFailed

    deadline = time.monotonic() + timeout
    last = None
    while True:
        d = _dump(platform.call(platform.client.serving.get_deployment, dep_id))
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
