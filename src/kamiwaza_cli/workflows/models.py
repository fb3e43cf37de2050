"""Models by name: list the registered models, their readiness, find one by any of its names,
resolve what ``pull`` is asked for, and describe one for ``show``.

Models are the port's records (``platform.Model``); ``model_json`` is the one place a model becomes
the JSON ``list``/``pull --json`` print.
"""

from __future__ import annotations

from typing import Any

from .. import catalog, quantization, statuses
from ..catalog import ModelRef
from ..errors import KamiwazaError, NotFound, UsageError
from ..platform import Model, Platform


def list_models(platform: Platform) -> list[Model]:
    return platform.models()


def model_json(m: Model) -> dict[str, Any]:
    """A model as ``list --json`` and ``pull --json`` print it (docs/cli.md)."""
    ready = [f for f in m.files if f.ready]
    return {
        "id": m.id,
        "name": m.name,
        "repo_id": m.repo_id,
        "hub": m.hub,
        "status": m.state,
        "quantizations": quantization.available_quantizations([f.name for f in ready]),
        "files": len(m.files),
        "files_ready": len(ready),
        "size": sum(f.size or 0 for f in ready),
        "modified": m.modified,
    }


def find_model(platform: Platform, text: str, models: list[Model] | None = None) -> Model:
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
        if (m.repo_id or "").lower() in keys or (m.name or "").lower() in keys:
            return m
    if len(wanted) >= 4:
        by_id = [m for m in models if m.id.lower().startswith(wanted.lower())]
        if len(by_id) == 1:
            return by_id[0]
    known = [m.name for m in models if m.name]
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


def resolve_pull_ref(platform: Platform, text: str, models: list[Model]) -> ModelRef:
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
        if (m.name or "").lower() == ref.source.lower():
            model = m
    if model is None:
        suggestions = catalog.suggest(ref.source, [m.name for m in models if m.name])
        msg = f"unknown model {ref.source!r}"
        if suggestions:
            msg += f"; did you mean: {', '.join(suggestions)}?"
        raise NotFound(msg, hint="use a catalog name, OWNER/REPO, a .gguf path or URL; see: kamiwaza list --catalog")
    return ModelRef(ref.text, "repo", model.repo_id or model.name, ref.quant)


# Describing


def describe(platform: Platform, text: str) -> dict[str, Any]:
    """Everything ``show`` prints about a registered model, as stable JSON-ready data."""
    model = find_model(platform, text)
    full = platform.model(model.id)
    configs = platform.model_configs(full.id)
    available: list[str] = []
    if full.hub and full.repo_id:
        try:
            hub_files = platform.hub_files(full.hub, full.repo_id)
            available = quantization.available_quantizations([f.name for f in hub_files])
        except KamiwazaError:
            available = []  # the hub may be offline; show what is known locally
    files = []
    for f in full.files:
        status = "downloaded" if f.ready else ("downloading" if f.downloading else "not downloaded")
        files.append({"id": f.id, "name": f.name, "size": f.size, "sha256": f.checksum, "status": status})
    gguf_facts = [
        {
            "file": fact.file,
            "architecture": fact.architecture,
            "parameters": fact.parameters,
            "context_length": fact.context_length,
            "quantization": fact.quantization,
            "chat_template": fact.chat_template,
            "instruction_tuned": fact.instruct,
        }
        for fact in platform.facts(full)
    ]
    ready_names = [f.name for f in full.files if f.ready]
    deployments = [
        {"id": d.id, "status": d.status, "slots": d.slots, "context_per_slot": d.context_per_slot}
        for d in platform.deployments(full.id)
        if d.status not in statuses.ENDED
    ]
    return {
        "model": {
            "id": full.id,
            "name": full.name,
            "repo_id": full.repo_id,
            "hub": full.hub,
            "status": full.state,
            "quantizations": quantization.available_quantizations(ready_names),
        },
        "files": files,
        "quantizations_available": available or quantization.available_quantizations([f.name for f in full.files]),
        "configs": [{"id": c.id, "name": c.name, "default": c.default, "config": c.config} for c in configs],
        "gguf": gguf_facts,
        "deployments": deployments,
    }
