"""Models by name: list the registered models, their readiness, find one by any of its names,
resolve what ``pull`` is asked for, and describe one for ``show``.

Models are the port's records (``platform.Model``); ``model_json`` is the one place a model becomes
the JSON ``list``/``pull --json`` print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import catalog, quantization, statuses
from ..catalog import ModelRef
from ..errors import KamiwazaError, NotFound, UsageError
from ..platform import Model, ModelFile, Platform


def list_models(platform: Platform) -> list[Model]:
    return platform.models()


@dataclass(frozen=True)
class Variant:
    """One quantization of a registered model: its weight files (split parts in order) and the
    projector that rides along. ``quantization`` is None for untagged or non-GGUF weights."""

    model: Model
    quantization: str | None
    files: tuple[ModelFile, ...]
    projector: ModelFile | None = None

    @property
    def first(self) -> ModelFile:
        return self.files[0]

    @property
    def label(self) -> str:
        """``name:quant`` as the user names it."""
        return f"{self.model.name}:{self.quantization}" if self.quantization else self.model.name

    @property
    def parts(self) -> tuple[int, int]:
        """(files ready, files expected): a split model expects every part its names count, and a
        vision model its projector too."""
        counts = [p[1] for f in self.files if (p := quantization.split_part(f.name))]
        expected = max([len(self.files), *counts]) + (1 if self.projector else 0)
        return sum(1 for f in self.all_files if f.ready), expected

    @property
    def state(self) -> str:
        """downloading | ready | incomplete (a part or the projector missing or not downloaded)."""
        if any(f.downloading for f in self.all_files):
            return "downloading"
        ready, expected = self.parts
        return "ready" if ready == expected else "incomplete"

    @property
    def all_files(self) -> tuple[ModelFile, ...]:
        return (*self.files, *((self.projector,) if self.projector else ()))

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.all_files if f.ready)


def _variant(model: Model, choice: quantization.Choice) -> Variant:
    by_name = {f.name: f for f in model.files}
    projector = by_name.get(choice.projector) if choice.projector else None
    return Variant(model, choice.quantization, tuple(by_name[n] for n in choice.weights), projector)


def variants(model: Model) -> list[Variant]:
    """Every quantization of a registered model, in the default order's ranking."""
    names = [f.name for f in model.files]
    labels = quantization.available_quantizations(names)
    if not labels:
        try:
            return [_variant(model, quantization.choose(names))]
        except quantization.NoMatch:
            return []
    found = [_variant(model, quantization.choose(names, q)) for q in labels]
    order = quantization.DEFAULT_ORDER

    def rank(v: Variant) -> tuple[int, str]:
        key = quantization.normalize(v.quantization or "")
        return (order.index(key) if key in order else len(order), key)

    return sorted(found, key=rank)


def select_variant(model: Model, tag: str | None) -> Variant | None:
    """The quantization of a registered model that ``tag`` names, or, with no tag, the one the
    default order picks among those it has (ready ones first); None when it has no such files."""
    names = [f.name for f in model.files]
    if tag is None:
        every = variants(model)
        ready = [v for v in every if v.state == "ready"]
        return (ready or every)[0] if every else None
    try:
        return _variant(model, quantization.choose(names, tag))
    except quantization.NoMatch:
        return None


def model_json(m: Model) -> dict[str, Any]:
    """A model as ``list --json`` and ``pull --json`` print it (docs/cli.md)."""
    ready = [f for f in m.files if f.ready]
    every = variants(m)
    return {
        "id": m.id,
        "name": m.name,
        "repo_id": m.repo_id,
        "hub": m.hub,
        "status": m.state if not every or m.state == "downloading" else _worst(every),
        "quantizations": quantization.available_quantizations([f.name for f in ready]),
        "files": len(m.files),
        "files_ready": len(ready),
        "size": sum(f.size or 0 for f in ready),
        "modified": m.modified,
        "variants": [variant_json(v) for v in every],
    }


def _worst(every: list[Variant]) -> str:
    states = {v.state for v in every}
    return next((s for s in ("downloading", "incomplete") if s in states), "ready")


def variant_json(v: Variant) -> dict[str, Any]:
    ready, expected = v.parts
    return {
        "quantization": v.quantization,
        "file": v.first.name,
        "files": [f.name for f in v.files],
        "projector": v.projector.name if v.projector else None,
        "status": v.state,
        "parts_ready": ready,
        "parts": expected,
        "size": v.size,
    }


def ambiguous(text: str, found: list[Model]) -> UsageError:
    names = ", ".join(sorted(m.repo_id or m.name for m in found))
    first = sorted(m.repo_id or m.name for m in found)[0]
    return UsageError(
        f"{text!r} matches {len(found)} downloaded models: {names}",
        hint=f"name one by its repo id, e.g. {first}",
    )


def find_model(platform: Platform, text: str, models: list[Model] | None = None) -> Model:
    """A registered model, named (case-insensitively) by, in this order: its exact repo id (or the
    path/URL it came from), a catalog name, its exact name, or a unique prefix of its id, name or
    repo id. A ``:quant`` suffix is ignored here (``select_variant`` reads it). A name several
    models answer to is a UsageError listing them."""
    models = list_models(platform) if models is None else models
    wanted = text.strip()
    base, _tag = catalog.split_tag(wanted)
    try:
        ref: ModelRef | None = catalog.parse(wanted)
    except UsageError:
        ref = None
    lowered = base.lower()
    sources = {lowered, (ref.source.lower() if ref else lowered)}
    exact = [m for m in models if (m.repo_id or "").lower() in sources]
    if exact:
        return exact[0]
    if ref is not None and ref.friendly is not None:  # a catalog name means its repo, nothing else
        raise NotFound(f"{ref.friendly} ({ref.source}) is not downloaded", hint=f"pull it with: kamiwaza pull {wanted}")
    named = [m for m in models if (m.name or "").lower() == lowered]
    if len(named) > 1:
        raise ambiguous(base, named)
    if named:
        return named[0]
    prefixed = [
        m
        for m in models
        if (len(lowered) >= 4 and m.id.lower().startswith(lowered))
        or (m.name or "").lower().startswith(lowered)
        or (m.repo_id or "").lower().startswith(lowered)
        or (m.repo_id or "").lower().rsplit("/", 1)[-1].startswith(lowered)
    ]
    if len(prefixed) > 1:
        raise ambiguous(base, prefixed)
    if prefixed:
        return prefixed[0]
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
    try:
        model = find_model(platform, text, models)
    except NotFound:
        suggestions = catalog.suggest(ref.source, [m.name for m in models if m.name])
        msg = f"unknown model {ref.source!r}"
        if suggestions:
            msg += f"; did you mean: {', '.join(suggestions)}?"
        raise NotFound(
            msg, hint="use a catalog name, OWNER/REPO, a .gguf path or URL; see: kamiwaza list --catalog"
        ) from None
    return ModelRef(ref.text, "repo", model.repo_id or model.name, ref.quant)


# Describing


def describe(platform: Platform, text: str) -> dict[str, Any]:
    """Everything ``show`` prints about a registered model, as stable JSON-ready data. With a
    ``:quant`` suffix, its files are only those of that quantization."""
    model = find_model(platform, text)
    _, tag = catalog.split_tag(text.strip())
    full = platform.model(model.id)
    every = variants(full)
    if tag is not None:
        chosen = select_variant(full, tag)
        if chosen is None:
            have = ", ".join(v.quantization or "-" for v in every) or "none"
            raise NotFound(
                f"{full.name} has no {tag} downloaded (it has: {have})",
                hint=f"pull it with: kamiwaza pull {text.strip()}",
            )
        every = [chosen]
    configs = platform.model_configs(full.id)
    available: list[str] = []
    if full.hub and full.repo_id:
        try:
            hub_files = platform.hub_files(full.hub, full.repo_id)
            available = quantization.available_quantizations([f.name for f in hub_files])
        except KamiwazaError:
            available = []  # the hub may be offline; show what is known locally
    shown = {f.id for v in every for f in v.all_files} if tag is not None else {f.id for f in full.files}
    files = []
    for f in full.files:
        if f.id not in shown:
            continue
        status = "downloaded" if f.ready else ("downloading" if f.downloading else "not downloaded")
        files.append({"id": f.id, "name": f.name, "size": f.size, "sha256": f.checksum, "status": status})
    firsts = {v.first.name for v in every}  # one entry per quantization: its first part holds the header
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
        if fact.file in firsts
    ]
    ready_names = [f.name for f in full.files if f.ready]
    file_ids = {v.first.id for v in every}
    deployments = [
        {"id": d.id, "status": d.status, "slots": d.slots, "context_per_slot": d.context_per_slot, "file": d.file_name}
        for d in platform.deployments(full.id)
        if d.status not in statuses.ENDED and (tag is None or d.file_id in file_ids)
    ]
    return {
        "model": {
            "id": full.id,
            "name": full.name,
            "repo_id": full.repo_id,
            "hub": full.hub,
            "status": _worst(every) if every and full.state != "downloading" else full.state,
            "quantizations": quantization.available_quantizations(ready_names),
        },
        "variants": [variant_json(v) for v in every],
        "files": files,
        "quantizations_available": available or quantization.available_quantizations([f.name for f in full.files]),
        "configs": [{"id": c.id, "name": c.name, "default": c.default, "config": c.config} for c in configs],
        "gguf": gguf_facts,
        "deployments": deployments,
    }
