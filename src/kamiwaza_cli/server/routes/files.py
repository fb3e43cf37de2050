"""``/api/model_files/*``: model files (list, hub file search, get, delete), download status
and cancelling a download. The hub file search waits for the hub: it runs in the outbound pool
(``models.outbound``).
"""

from __future__ import annotations

import shutil
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from ...statuses import ACTIVE
from .. import sources
from ..downloads import partial_path
from ..sources import SourceError
from ..store import UnsafeName, now
from . import planning
from .context import ServerContext, need_file, need_model, source_error
from .models import outbound
from .shapes import file_json, status_json


class CreateModelFile(BaseModel):
    """The SDK's CreateModelFile, plus the model the file belongs to (which it cannot send)."""

    name: str = Field(min_length=1, max_length=512)
    size: int | None = Field(default=None, ge=0)
    storage_type: str | None = None
    storage_host: str | None = "localhost"
    storage_location: str | None = None
    model_id: UUID | None = None
    m_id: UUID | None = None


class HubModelFileSearch(BaseModel):
    hub: str
    model: str
    version: str | None = None


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.get("/api/model_files/")
    def list_files() -> list[dict[str, Any]]:
        return [file_json(ctx, r) for r in ctx.store.list_files()]

    @api.post("/api/model_files/search/")
    async def search_files(body: HubModelFileSearch) -> list[dict[str, Any]]:
        return await outbound(lambda: _search_files(body))

    def _search_files(body: HubModelFileSearch) -> list[dict[str, Any]]:
        hub = sources.normalize_hub(body.hub, body.model)
        existing = ctx.store.get_model_by_repo(body.model)
        registered = {f["name"]: f for f in ctx.store.list_files(existing["id"])} if existing else {}
        try:
            remote = sources.list_files(hub, body.model, body.version)
        except SourceError as exc:
            if registered:
                return [file_json(ctx, r) for r in registered.values()]
            raise source_error(exc) from exc
        out = []
        for f in remote:
            row = registered.get(f.name)
            if row is not None:
                out.append(file_json(ctx, row))
            else:
                out.append(
                    {
                        "id": None,
                        "name": f.name,
                        "size": f.size,
                        "hub": hub,
                        "checksum": f.sha256,
                        "checksum_type": "sha256" if f.sha256 else None,
                        "storage_type": None,
                        "storage_location": None,
                        "is_downloading": False,
                        "download": False,
                        "model_id": existing["id"] if existing else None,
                    }
                )
        return out

    # Registered before /{file_id}: fixed paths come before a parameter that could claim them.
    @api.get("/api/model_files/download_status/")
    def download_status(model_ids: list[UUID] | None = Query(default=None)) -> list[dict[str, Any]]:
        wanted = {str(m) for m in model_ids or []}
        rows = ctx.store.list_files()
        return [status_json(ctx, r) for r in rows if not wanted or r["m_id"] in wanted]

    @api.post("/api/model_files/")
    def create_file(body: CreateModelFile) -> dict[str, Any]:
        model_id = body.model_id or body.m_id
        if model_id is None:
            # A file row belongs to a model here (the SDK's CreateModelFile names none).
            raise HTTPException(
                400,
                "a model file needs the model it belongs to: add model_id to the body, or register a "
                "GGUF on this machine with: kamiwaza pull ./FILE.gguf",
            )
        model = need_model(ctx.store, model_id)
        if any(f["name"] == body.name for f in ctx.store.list_files(model["id"])):
            raise HTTPException(409, f"{model['name']} already has a file named {body.name}")
        try:
            ctx.store.blob_path(model["id"], body.name)
        except UnsafeName as exc:
            raise HTTPException(400, str(exc)) from exc
        # Registered, not stored: a path the client names is never taken as the file's place on
        # disk (only the store decides where weights live), so storage_location stays empty.
        with ctx.store.transaction() as db:
            file_id = ctx.store.insert_file(db, m_id=model["id"], name=body.name, size=body.size, download=False)
        return file_json(ctx, ctx.store.get_file(file_id) or {})

    @api.delete("/api/model_files/downloads/cancel_all")
    def cancel_all(model_id: UUID | None = None) -> dict[str, Any]:
        rows = [f for f in ctx.store.downloading_files() if model_id is None or f["m_id"] == str(model_id)]
        cancelled = [f["id"] for f in rows if cancel(f)]
        failed = [f["id"] for f in rows if f["id"] not in cancelled]
        return {
            "result": not failed,
            "message": f"Cancelled {len(cancelled)} of {len(rows)} download(s)",
            "total_downloads": len(rows),
            "cancelled_count": len(cancelled),
            "failed_count": len(failed),
            "cancelled_files": cancelled,
            "failed_files": failed,
            "cancelled_at": now() if cancelled else None,
        }

    @api.get("/api/model_files/{file_id}/memory_usage")
    def file_memory_usage(file_id: UUID) -> int:
        row = need_file(ctx.store, file_id)
        p = planning.plan(ctx, need_model(ctx.store, UUID(row["m_id"])), file_id, None)
        return planning.estimate(ctx, p).total

    @api.get("/api/model_files/{file_id}")
    def get_file(file_id: UUID) -> dict[str, Any]:
        return file_json(ctx, need_file(ctx.store, file_id))

    @api.delete("/api/model_files/{file_id}")
    def delete_file(file_id: UUID) -> dict[str, Any]:
        row = need_file(ctx.store, file_id)
        deployments = ctx.store.list_deployments(row["m_id"])
        using = [d for d in deployments if d["status"] in ACTIVE and d["m_file_id"] == row["id"]]
        if using:
            raise HTTPException(409, f"{row['name']} is served by deployment {using[0]['id']}; stop it first")
        ctx.downloads.cancel(row["id"])
        path = ctx.store.blob_path(row["m_id"], row["name"])
        path.unlink(missing_ok=True)
        partial_path(path).unlink(missing_ok=True)
        ctx.store.delete_file(row["id"])
        return {"message": f"Model file {row['name']} deleted", "id": row["id"]}

    def cancel(row: dict[str, Any]) -> bool:
        """Stop a file's download; a model left with nothing on disk or on its way goes too."""
        if not ctx.downloads.cancel(row["id"]):
            return False
        model_files = ctx.store.list_files(row["m_id"])
        if not any(f["storage_location"] or f["is_downloading"] for f in model_files):
            # Nothing of this model is on disk or on its way: don't leave a half-registered model.
            ctx.store.delete_model(row["m_id"])
            shutil.rmtree(ctx.store.model_dir(row["m_id"]), ignore_errors=True)
        return True

    @api.delete("/api/model_files/{file_id}/download")
    def cancel_download(file_id: UUID) -> dict[str, Any]:
        row = need_file(ctx.store, file_id)
        if not cancel(row):
            return {"result": False, "message": f"No download in progress for {row['name']}", "file_id": row["id"]}
        return {
            "result": True,
            "message": f"Download of {row['name']} cancelled",
            "file_id": row["id"],
            "cancelled_at": now(),
        }
