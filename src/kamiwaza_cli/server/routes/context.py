"""The state the route modules share, and the lookups that turn a missing row or a source failure
into the platform's HTTP error.

``ServerContext`` is created by ``create_app`` (auth) and filled in by its lifespan (store,
downloads, supervisor, gateway); routes read it per request, never at import or registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import HTTPException

from ..auth import LocalAuth
from ..downloads import DownloadManager
from ..gateway import Gateway
from ..sources import SourceError
from ..store import Store
from ..supervisor import Supervisor

_SOURCE_STATUS = {"not_found": 404, "gated": 403, "offline": 502, "bad_input": 400, "error": 502}


@dataclass
class ServerContext:
    auth: LocalAuth
    # Set by the lifespan, before the first request.
    store: Store = field(init=False)
    downloads: DownloadManager = field(init=False)
    supervisor: Supervisor = field(init=False)
    gateway: Gateway = field(init=False)


def need_model(store: Store, model_id: UUID) -> dict[str, Any]:
    row = store.get_model(str(model_id))
    if row is None:
        raise HTTPException(404, f"Model {model_id} not found")
    return row


def need_file(store: Store, file_id: UUID) -> dict[str, Any]:
    row = store.get_file(str(file_id))
    if row is None:
        raise HTTPException(404, f"Model file {file_id} not found")
    return row


def need_deployment(store: Store, deployment_id: UUID) -> dict[str, Any]:
    d = store.get_deployment(str(deployment_id))
    if d is None:
        raise HTTPException(404, f"Deployment {deployment_id} not found")
    return d


def source_error(exc: SourceError) -> HTTPException:
    return HTTPException(_SOURCE_STATUS.get(exc.code, 502), exc.message, headers={"X-Kamiwaza-Error-Code": exc.code})
