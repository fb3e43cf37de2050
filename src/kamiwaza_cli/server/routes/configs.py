"""``/api/model_configs/*``: model configurations (list, create, get, replace, delete)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from .context import ServerContext, need_model
from .shapes import config_json


class CreateModelConfig(BaseModel):
    m_id: UUID
    m_file_id: UUID | None = None
    name: str | None = None
    default: bool
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    system_config: dict[str, Any] = Field(default_factory=dict)


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.get("/api/model_configs/")
    def list_configs(model_id: UUID | None = None) -> list[dict[str, Any]]:
        return [config_json(r) for r in ctx.store.list_configs(str(model_id) if model_id else None)]

    @api.post("/api/model_configs/")
    def create_config(body: CreateModelConfig) -> dict[str, Any]:
        need_model(ctx.store, body.m_id)
        data = body.model_dump(mode="json")
        with ctx.store.transaction() as db:
            config_id = ctx.store.insert_config(db, **data)
        return config_json(ctx.store.get_config(config_id) or {})

    @api.get("/api/model_configs/{config_id}")
    def get_config(config_id: UUID) -> dict[str, Any]:
        row = ctx.store.get_config(str(config_id))
        if row is None:
            raise HTTPException(404, f"Model config {config_id} not found")
        return config_json(row)

    @api.put("/api/model_configs/{config_id}")
    def update_config(config_id: UUID, body: CreateModelConfig) -> dict[str, Any]:
        get_config(config_id)
        need_model(ctx.store, body.m_id)
        ctx.store.update_config(str(config_id), **body.model_dump(mode="json"))
        return config_json(ctx.store.get_config(str(config_id)) or {})

    @api.delete("/api/model_configs/{config_id}")
    def delete_config(config_id: UUID) -> dict[str, Any]:
        get_config(config_id)
        ctx.store.delete_config(str(config_id))
        return {"message": f"Model config {config_id} deleted"}
