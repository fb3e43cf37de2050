"""``/api/serving/*``: deploying a model on an engine, and the deployments, their status, logs,
instances and health, as the platform shapes them.

A deploy the server cannot take (past the engine cap, or more memory than is free: see
supervisor.py) is refused with 409 and a one-line detail with the numbers and the next step,
before any deployment row or engine exists; the platform's spec lists 409 among the synchronous
admission errors of ``deploy_model``, and the CLI prints such a detail as its one error line.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ...statuses import ACTIVE, REQUESTED
from .. import engines
from ..enginelog import EngineLog
from ..engines.llamacpp import MAX_SLOTS
from ..supervisor import AdmissionRefused, port_is_free, tail
from . import logpatterns, planning
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


class DeployAfterDownload(BaseModel):
    """The platform's optional body; ``novice_selected_context`` and other keys are ignored."""

    files_to_deploy: list[str] | None = None


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    def deploy(body: CreateModelDeployment) -> str:
        p = planning.plan(ctx, need_model(ctx.store, body.m_id), body.m_file_id, body.m_config_id)
        try:
            engine = engines.pick([Path(f["name"]) for f in p.candidates], body.engine_name)
            engine.check_installed()
        except engines.EngineUnavailable as exc:
            raise HTTPException(400, str(exc)) from exc
        if body.lb_port and not port_is_free(body.lb_port):
            raise HTTPException(409, f"port {body.lb_port} is already in use")
        try:
            return ctx.supervisor.deploy(
                model=p.model,
                config=p.config,
                file_row=p.file_row,
                engine_name=engine.name,
                requested_port=body.lb_port or None,
                max_concurrent_requests=body.max_concurrent_requests,
                force_cpu=body.force_cpu,
            )
        except AdmissionRefused as exc:
            raise HTTPException(409, str(exc)) from exc
        except engines.EngineUnavailable as exc:  # a config the engine refuses (slots, context)
            raise HTTPException(400, str(exc)) from exc

    @api.post("/api/serving/deploy_model")
    def deploy_model(body: CreateModelDeployment) -> str:
        return deploy(body)

    @api.post("/api/serving/estimate_model_vram")
    def estimate_model_vram(body: CreateModelDeployment) -> dict[str, Any]:
        model = ctx.store.get_model(str(body.m_id))
        if model is None:
            # The platform answers an unknown model with the estimate's keys and no number (the
            # SDK's live test posts a random m_id and reads them); the reason is said too.
            return {
                "computed_vram_estimate": None,
                "estimation_source": "none",
                "detail": f"Model {body.m_id} not found",
            }
        p = planning.plan(ctx, model, body.m_file_id, body.m_config_id)
        return planning.estimate_json(p, planning.estimate(ctx, p, body.max_concurrent_requests))

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

    @api.get("/api/serving/model_instance/{instance_id}")
    def model_instance(instance_id: UUID) -> dict[str, Any]:
        for d in ctx.store.list_deployments():
            if d["instance_id"] == str(instance_id):
                return instance_json(d)
        raise HTTPException(404, f"Model instance {instance_id} not found")

    @api.delete("/api/serving/deployment/{deployment_id}/delete")
    def delete_deployment(deployment_id: UUID, force: bool = False) -> bool:
        d = need_deployment(ctx.store, deployment_id)
        if d["status"] in ACTIVE:
            if not force:
                raise HTTPException(
                    409, f"deployment {d['id']} is {d['status']}; stop it first or delete with force=true"
                )
            ctx.supervisor.stop(d["id"])
        ctx.store.delete_deployment(d["id"])
        ctx.supervisor.log_path(d["id"]).unlink(missing_ok=True)
        return True

    @api.get("/api/serving/deployment/{deployment_id}/logs/patterns")
    def deployment_log_patterns(deployment_id: UUID) -> dict[str, Any]:
        d = need_deployment(ctx.store, deployment_id)
        path = ctx.supervisor.log_path(d["id"])
        return logpatterns.analyse(d["id"], tail(path, logpatterns.LINES) if path.exists() else [])

    @api.get("/api/serving/logs/{engine_type}")
    def engine_logs(engine_type: str) -> dict[str, Any]:
        # One log file per deployment (the engine's output); the platform lists container logs.
        out = []
        for d in ctx.store.list_deployments():
            path = ctx.supervisor.log_path(d["id"])
            if d["engine_name"] != engine_type or not path.exists():
                continue
            st = path.stat()
            out.append(
                {
                    "deployment_id": d["id"],
                    "m_name": d["m_name"] or "",
                    "status": d["status"],
                    "log_file_path": str(path),
                    "size": str(st.st_size),
                    "modified_at": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
                }
            )
        return {"engine_type": engine_type, "logs": out}

    @api.get("/api/serving/status")
    def serving_status() -> dict[str, Any]:
        # The platform reports on Ray; this server runs its engines itself and has no Ray to start.
        return {
            "status": "not running",
            "ray": False,
            "mode": "single-node",
            "engines": sorted(e.name for e in engines.engines()),
            "active_deployments": sum(d["status"] in ACTIVE for d in ctx.store.list_deployments()),
        }

    # :path, so a repo id (owner/name) can be the key as well as a model's UUID.
    @api.post("/api/models/deploy_after_download/{model_key:path}")
    def deploy_after_download(model_key: str, request: DeployAfterDownload | None = None) -> dict[str, Any]:
        model = ctx.store.get_model_by_repo(model_key)
        if model is None:
            try:
                model = ctx.store.get_model(str(UUID(model_key)))
            except ValueError:
                model = None
        if model is None:
            raise HTTPException(404, f"Model {model_key} not found")
        files = [f for f in ctx.store.list_files(model["id"]) if f["download"]]
        downloading = [f["name"] for f in files if f["is_downloading"]]
        if downloading:
            return {"deployed": False, "status": "downloading", "model_id": model["id"], "files": downloading}
        wanted = request.files_to_deploy if request and request.files_to_deploy else None
        stored = planning.stored_weights(ctx.store.list_files(model["id"]))
        chosen = [f for f in stored if wanted is None or f["name"] in wanted]
        if not chosen:
            raise HTTPException(400, f"model {model['name']} is not downloaded; pull it first")
        active = [d for d in ctx.store.list_deployments(model["id"]) if d["status"] in ACTIVE]
        if active:
            d = active[0]
            return {"deployed": True, "status": d["status"], "model_id": model["id"], "deployment_id": d["id"]}
        dep_id = deploy(CreateModelDeployment(m_id=UUID(model["id"]), m_file_id=UUID(chosen[0]["id"])))
        return {"deployed": True, "status": REQUESTED, "model_id": model["id"], "deployment_id": dep_id}

    for method, path, what in NOT_HERE:
        api.add_api_route(path, refusal(what), methods=[method])


# Routes of a cluster that a single node has no counterpart for: answered 501 with the reason, which
# the SDK raises as an APIError carrying that text (docs/api-differences.md).
NOT_HERE = (
    ("POST", "/api/serving/start", "starting Ray: the local server runs its engines itself, without Ray"),
    ("POST", "/api/serving/routes/greymatter", "Greymatter routes: there is no ingress mesh on a single node"),
    ("DELETE", "/api/serving/routes/greymatter/{route_id}", "Greymatter routes: no ingress mesh on a single node"),
    (
        "POST",
        "/api/serving/external-endpoints/discover",
        "external endpoints: the local server serves only the models it runs",
    ),
    (
        "POST",
        "/api/models/download_and_deploy",
        "download-and-deploy: pull, then deploy (kamiwaza run MODEL does both)",
    ),
)


def refusal(what: str) -> Any:
    def refuse() -> JSONResponse:
        return JSONResponse({"detail": f"not supported by the Kamiwaza local server: {what}"}, status_code=501)

    return refuse
