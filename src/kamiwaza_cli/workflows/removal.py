"""Removing: delete registered models (``kamiwaza rm``), refusing while a deployment uses one unless
forced, in which case its deployments are stopped first.

Apart from models.py because it needs serving.py's deployments, and serving.py needs models.py.
"""

from __future__ import annotations

from ..errors import Conflict
from ..platform import Model, Platform
from .models import find_model, list_models
from .serving import ACTIVE_STATUSES, list_deployments, stop_deployments


def remove(platform: Platform, texts: list[str], force: bool = False) -> list[Model]:
    models = list_models(platform)
    targets = [find_model(platform, t, models) for t in texts]  # resolve all first: no partial rm on a typo
    active = [d for d in list_deployments(platform) if d.status in ACTIVE_STATUSES]
    for m in targets:
        using = [d for d in active if d.model_id == m.id]
        if using and not force:
            raise Conflict(
                f"{m.name} is used by deployment {using[0].id[:8]} ({using[0].status})",
                hint=f"stop it first with: kamiwaza stop {m.name} (or: kamiwaza rm --force {m.name})",
            )
    for m in targets:
        stop_deployments(platform, [d for d in active if d.model_id == m.id])
        platform.delete_model(m.id)
    return targets
