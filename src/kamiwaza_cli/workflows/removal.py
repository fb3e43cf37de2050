"""Removing: delete registered models or one quantization of one (``kamiwaza rm``), refusing while
a deployment uses what would go unless forced, in which case those deployments are stopped first.

``rm NAME:QUANT`` removes that quantization's files only; the model (with its companion files,
the projector) goes with its last quantization. ``rm NAME`` removes the whole model.
Apart from models.py because it needs serving.py's deployments, and serving.py needs models.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import catalog
from ..errors import Conflict, NotFound
from ..platform import Deployment, Model, Platform
from .models import Variant, find_model, list_models, select_variant, variants
from .serving import ACTIVE_STATUSES, list_deployments, stop_deployments


@dataclass(frozen=True)
class Removed:
    """What ``rm`` took away: a whole model, or one quantization (``quantization`` set)."""

    model: Model
    quantization: str | None = None
    files: int = 0
    model_gone: bool = True

    @property
    def label(self) -> str:
        return f"{self.model.name}:{self.quantization}" if self.quantization else self.model.name


def _target(platform: Platform, text: str, models: list[Model]) -> tuple[Model, Variant | None]:
    model = find_model(platform, text, models)
    _, tag = catalog.split_tag(text.strip())
    if tag is None:
        return model, None
    variant = select_variant(model, tag)
    if variant is None:
        have = ", ".join(v.quantization or "-" for v in variants(model)) or "none"
        raise NotFound(f"{model.name} has no {tag} downloaded (it has: {have})", hint="see models with: kamiwaza list")
    return model, variant


def remove(platform: Platform, texts: list[str], force: bool = False) -> list[Removed]:
    models = list_models(platform)
    targets = [_target(platform, t, models) for t in texts]  # resolve all first: no partial rm on a typo
    active = [d for d in list_deployments(platform) if d.status in ACTIVE_STATUSES]

    def users(model: Model, variant: Variant | None) -> list[Deployment]:
        mine = [d for d in active if d.model_id == model.id]
        if variant is None:
            return mine
        ids = {f.id for f in variant.files}
        # A deployment that does not say its file could be serving this one: count it.
        return [d for d in mine if d.file_id is None or d.file_id in ids]

    for model, variant in targets:
        using = users(model, variant)
        if using and not force:
            label = variant.label if variant else model.name
            raise Conflict(
                f"{label} is used by deployment {using[0].id[:8]} ({using[0].status})",
                hint=f"stop it first with: kamiwaza stop {label} (or: kamiwaza rm --force {label})",
            )
    removed = []
    for model, variant in targets:
        stop_deployments(platform, users(model, variant))
        others = [v for v in variants(model) if variant is not None and v.quantization != variant.quantization]
        if variant is None or not others:
            platform.delete_model(model.id)
            removed.append(Removed(model, variant.quantization if variant else None, len(model.files)))
            continue
        for f in variant.files:  # the projector stays: the other quantizations use it
            platform.delete_file(f.id)
        removed.append(Removed(model, variant.quantization, len(variant.files), model_gone=False))
    return removed
