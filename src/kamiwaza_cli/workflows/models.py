"""Models by name: list the registered models, their readiness, find one by any of its names,
resolve what ``pull`` is asked for, and describe one for ``show``.

``_dump`` (SDK model -> JSON-ready dict) and ``file_ready`` (the SDK's readiness rule) live here
and are shared by the other workflow modules.
"""

from __future__ import annotations

from typing import Any

from .. import catalog, quantization
from ..catalog import ModelRef
from ..errors import KamiwazaError, NotFound, UsageError
from ..platform import Platform


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
    deployments = [
        {
            "id": str(d.get("id")),
            "status": d.get("status"),
            "slots": d.get("max_concurrent_requests"),
            "context_per_slot": d.get("context_per_slot"),
        }
        for d in platform.deployments(full["id"])
        if d.get("status") not in ("STOPPED", "FAILED")
    ]
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
        "deployments": deployments,
    }


def _gguf_facts(f: dict[str, Any]) -> list[dict[str, Any]]:
    from ..gguf import GGUFError, read_gguf

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
