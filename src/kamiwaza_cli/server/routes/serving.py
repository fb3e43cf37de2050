"""``/api/serving/*``: deploying a model on an engine, and the deployments, their status, logs,
instances and health, as the platform shapes them.

A deploy the server cannot take (past the engine cap, or more memory than is free: see
supervisor.py) is refused with 409 and a one-line detail with the numbers and the next step,
before any deployment row or engine exists; the platform's spec lists 409 among the synchronous
admission errors of ``deploy_model``, and the CLI prints such a detail as its one error line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ... import quantization
from ...statuses import ACTIVE
from .. import engines
from ..enginelog import EngineLog
from ..engines.llamacpp import MAX_SLOTS
from ..supervisor import AdmissionRefused, is_projector, port_is_free
from .context import ServerContext, need_deployment, need_model
from .shapes import deployment_json, instance_json, raw_json


class CreateModelDeployment(BaseModel):
    """The SDK sends more fields (copies, vram, autoscaling...); a single node ignores them."""

    m_id: UUID
    m_config_id: UUID | None = None
    m_file_id: UUID | None = None
    engine_name: str | None = None
    lb_port: int | None = Field(default=0, ge=0, le=65535)
    # The engine's parallel slots (llama-server --parallel); None: the engine's default.
    max_concurrent_requests: int | None = Field(default=None, ge=1, le=MAX_SLOTS)
    force_cpu: bool = False


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.post("/api/serving/deploy_model")
    def deploy_model(body: CreateModelDeployment) -> str:
        model = need_model(ctx.store, body.m_id)
        files = ctx.store.list_files(model["id"])
        if body.m_file_id is not None:
            candidates = [f for f in files if f["id"] == str(body.m_file_id)]
            if not candidates:
                raise HTTPException(404, f"Model file {body.m_file_id} not found in {model['name']}")
        else:
            stored = [
                f for f in files if f["storage_location"] and not f["is_downloading"] and not is_projector(f["name"])
            ]
            preferred = quantization.select_files([f["name"] for f in stored], quantization.DEFAULT_QUANTIZATION)
            # GGUF weights first (the default quantization among them), then anything else stored.
            candidates = sorted(
                stored, key=lambda f: (not f["name"].lower().endswith(".gguf"), f["name"] not in preferred, f["name"])
            )
        if not candidates or not candidates[0]["storage_location"]:
            raise HTTPException(400, f"model {model['name']} is not downloaded; pull it first")
        file_row = candidates[0]
        configs = ctx.store.list_configs(model["id"])
        if body.m_config_id is not None:
            config = next((c for c in configs if c["id"] == str(body.m_config_id)), None)
            if config is None:
                raise HTTPException(404, f"Model config {body.m_config_id} not found for {model['name']}")
        else:
            config = next((c for c in configs if c["default"]), configs[0] if configs else None)
            if config is None:
                raise HTTPException(400, f"model {model['name']} has no configuration")
        try:
            engine = engines.pick([Path(f["name"]) for f in candidates], body.engine_name)
            engine.check_installed()
        except engines.EngineUnavailable as exc:
            raise HTTPException(400, str(exc)) from exc
        if body.lb_port and not port_is_free(body.lb_port):
            raise HTTPException(409, f"port {body.lb_port} is already in use")
        try:
            return ctx.supervisor.deploy(
                model=model,
                config=config,
                file_row=file_row,
                engine_name=engine.name,
                requested_port=body.lb_port or None,
                max_concurrent_requests=body.max_concurrent_requests,
                force_cpu=body.force_cpu,
            )
        except AdmissionRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        except engines.EngineUnavailable as exc:  # a config the engine refuses (slots, context)
            raise HTTPException(400, str(exc)) from exc

    @api.get("/api/serving/deployments")
    async def list_deployments(model_id: UUID | None = None) -> Response:  # async: a hot read-only route
        return raw_json([deployment_json(d) for d in ctx.store.list_deployments(str(model_id) if model_id else None)])

    @api.get("/api/serving/deployment/{deployment_id}")
    def get_deployment(deployment_id: UUID) -> dict[str, Any]:
        return deployment_json(need_deployment(ctx.store, deployment_id))

    @api.get("/api/serving/deployment/{deployment_id}/status")
    def deployment_status(deployment_id: UUID) -> str:
        return str(need_deployment(ctx.store, deployment_id)["status"])

    @api.delete("/api/serving/deployment/{deployment_id}")
    def stop_deployment(deployment_id: UUID, force: bool = False) -> bool:
        d = need_deployment(ctx.store, deployment_id)
        if d["status"] in ACTIVE:
            ctx.supervisor.stop(d["id"])
        return True

    @api.get("/api/serving/deployment/{deployment_id}/logs")
    def deployment_logs(
        deployment_id: UUID,
        lines: int = Query(default=500, ge=1, le=10000),
        since: int | None = Query(default=None, ge=0),
    ) -> dict[str, Any]:
        """The platform's shape (the SDK's ``get_deployment_logs``): the last ``lines`` lines. Beyond
        it, for a follower: ``next_offset``, the log position after the lines returned, and
        ``since``, to ask for the lines from such a position on (enginelog.py: it survives
        rotations and restarts). The SDK ignores both."""
        d = need_deployment(ctx.store, deployment_id)
        path = ctx.supervisor.log_path(d["id"])
        active = ctx.supervisor.is_capturing(d["id"])
        engine_log = EngineLog(path)
        # A line still being written is held back until it ends, unless the engine has stopped.
        chunk = (
            engine_log.last(lines, partial=not active)
            if since is None
            else engine_log.read(since, lines, partial=not active)
        )
        return {
            "deployment_id": d["id"],
            "log_file_path": str(path),
            "logs": chunk.lines,
            "total_lines_seen": chunk.total_lines,
            "current_lines_stored": len(chunk.lines),
            "compressed": False,
            "capture_active": active,
            "engine_type": d["engine_name"],
            "container_id": None,
            "next_offset": chunk.next_offset,
        }

    @api.get("/api/serving/model_instances")
    def model_instances(deployment_id: UUID | None = None) -> list[dict[str, Any]]:
        rows = ctx.store.list_deployments()
        return [
            instance_json(d)
            for d in rows
            if d["instance_id"] and (deployment_id is None or d["id"] == str(deployment_id))
        ]

    @api.get("/api/serving/health")
    def serving_health() -> list[dict[str, str]]:
        # The platform's shape (and the SDK's get_health): one entry per active deployment.
        return [
            {"id": d["id"], "m_name": d["m_name"] or "", "status": d["status"], "engine_name": d["engine_name"] or ""}
            for d in ctx.store.list_deployments()
            if d["status"] in ACTIVE
        ]
