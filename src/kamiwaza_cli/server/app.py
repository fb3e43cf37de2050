"""HTTP routes of the local server, with the platform's exact paths, methods and JSON shapes.

This module only translates HTTP <-> domain: request bodies in, store rows and
download progress out in the shapes of kamiwaza-api.md (Model, ModelFile,
ModelConfig, ModelDownloadStatus, ModelSearchResponse). Trailing slashes are
registered exactly as the SDK sends them (FastAPI would otherwise answer 307).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from .. import __version__, quantization
from ..gguf import GGUFError, read_gguf
from . import engines, sources
from .auth import LocalAuth
from .downloads import DiskFull, DownloadManager, human_rate, mmss, partial_path
from .gateway import Gateway
from .guard import Guard
from .sources import SourceError
from .store import Store, UnsafeName, now
from .supervisor import ACTIVE, Supervisor, port_is_free, tail

_SOURCE_STATUS = {"not_found": 404, "gated": 403, "offline": 502, "bad_input": 400, "error": 502}


class ModelSearchRequest(BaseModel):
    query: str
    hubs_to_search: list[str] | None = None
    exact: bool | None = False
    limit: int | None = Field(default=100, ge=1, le=1000)


class HubModelFileSearch(BaseModel):
    hub: str
    model: str
    version: str | None = None


class ModelDownloadRequest(BaseModel):
    model: str
    version: str | None = None
    hub: str | None = None
    files_to_download: list[str] | None = None


class CreateModel(BaseModel):
    """Registering a model by hand (no files yet); ``pull`` registers through /models/download/."""

    name: str = Field(min_length=1, max_length=256)
    repo_modelId: str | None = Field(default=None, max_length=512)
    hub: str | None = None
    author: str | None = None
    description: str | None = None


class CreateModelConfig(BaseModel):
    m_id: UUID
    m_file_id: UUID | None = None
    name: str | None = None
    default: bool
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    system_config: dict[str, Any] = Field(default_factory=dict)


class CreateModelDeployment(BaseModel):
    """The SDK sends more fields (copies, vram, autoscaling...); a single node ignores them."""

    m_id: UUID
    m_config_id: UUID | None = None
    m_file_id: UUID | None = None
    engine_name: str | None = None
    lb_port: int | None = Field(default=0, ge=0, le=65535)


def json_bytes(data: Any) -> bytes:
    """Lists can be large: serialize them straight to JSON, skipping FastAPI's per-field encoder
    (the rows are already plain JSON types)."""
    return json.dumps(data, separators=(",", ":")).encode()


def raw_json(data: Any) -> Response:
    return Response(json_bytes(data), media_type="application/json")


def create_app(home: Path, api_key: str | None = None) -> FastAPI:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(home)
        downloads = DownloadManager(store)
        supervisor = Supervisor(store, home / "logs" / "deployments")
        gateway = Gateway()
        state.update(store=store, downloads=downloads, supervisor=supervisor, gateway=gateway)
        downloads.resume_interrupted()
        supervisor.start()
        yield
        supervisor.shutdown()
        downloads.shutdown()
        await gateway.close()
        store.close()

    app = FastAPI(title="Kamiwaza local server", version=__version__, lifespan=lifespan)

    auth = LocalAuth.from_env(home, api_key)

    app.add_middleware(Guard, auth=auth)

    @app.post("/api/auth/token")
    async def token(request: Request) -> Any:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if form.get("grant_type", ["password"])[0] != "password":
            return JSONResponse({"detail": "unsupported grant_type"}, status_code=400)
        granted = auth.password_grant(form.get("username", [""])[0], form.get("password", [""])[0])
        if granted is None:
            return JSONResponse({"detail": "Invalid username or password"}, status_code=401)
        return granted

    @app.post("/api/auth/refresh")
    def refresh(refresh_token: str) -> Any:
        granted = auth.refresh(refresh_token)
        if granted is None:
            return JSONResponse({"detail": "Invalid or expired refresh token"}, status_code=401)
        return granted

    @app.get("/api/auth/users/me")
    def users_me(request: Request) -> Any:
        who = auth.identify(request.headers.get("authorization", ""))
        if who is None:
            if auth.enabled:
                return JSONResponse({"detail": "Not authenticated"}, status_code=401)
            # No auth configured: everyone on loopback is the local owner.
            who = {"username": "local", "sub": "local", "email": None, "groups": [], "roles": ["admin"]}
        return who

    def store() -> Store:
        return state["store"]  # type: ignore[no-any-return]

    def downloads() -> DownloadManager:
        return state["downloads"]  # type: ignore[no-any-return]

    def supervisor() -> Supervisor:
        return state["supervisor"]  # type: ignore[no-any-return]

    # JSON shapes
    def file_json(row: dict[str, Any]) -> dict[str, Any]:
        progress = downloads().progress(row["id"]) if row["is_downloading"] else None
        size = row["size"]
        done = size if row["storage_location"] else 0
        pct = 100 if row["storage_location"] else 0
        remaining = throughput = None
        speed = eta = None
        if progress is not None:
            done, pct, speed, eta = progress.done, progress.percentage(), progress.speed(), progress.eta()
            throughput = human_rate(speed)
            remaining = mmss(eta) if eta is not None else None
        elif row["is_downloading"]:
            part = _partial(row)
            done = part.stat().st_size if part is not None and part.exists() else 0
            pct = int(done * 100 / size) if size else 0
        return {
            "id": row["id"],
            "name": row["name"],
            "size": size,
            "storage_type": "file",
            "storage_host": "localhost",
            "storage_location": row["storage_location"],
            "hub": row["hub"],
            "model_id": row["m_id"],
            "checksum": row["checksum"],
            "checksum_type": row["checksum_type"],
            "created_timestamp": row["created_timestamp"],
            "is_downloading": row["is_downloading"],
            "download_pid": None,
            "download": row["download"],
            "dl_requested_at": row["dl_requested_at"],
            "download_node": "localhost",
            "download_percentage": pct,
            "download_elapsed": row["download_elapsed"] or _elapsed(row),
            "download_remaining": remaining,
            "download_throughput": throughput,
            "download_cancelled_at": row["download_cancelled_at"],
            # Not in the platform's schema (extra keys are ignored by the SDK); the CLI reads them.
            "download_speed": speed,
            "download_eta": eta,
            "bytes_downloaded": done,
            "download_error": row["download_error"],
            "status": file_status(row),
        }

    def _partial(row: dict[str, Any]) -> Path | None:
        try:
            return partial_path(store().blob_path(row["m_id"], row["name"]))
        except (UnsafeName, ValueError):
            return None

    def _elapsed(row: dict[str, Any]) -> str | None:
        if not row["is_downloading"] or not row["download_started_at"]:
            return None
        from datetime import datetime

        started = datetime.fromisoformat(row["download_started_at"])
        return mmss(max(0.0, time.time() - started.timestamp()))

    def file_status(row: dict[str, Any]) -> str:
        if row["is_downloading"]:
            return "downloading"
        if row["storage_location"]:
            return "downloaded" if Path(row["storage_location"]).exists() else "missing"
        if row["download_error"] == "cancelled":
            return "cancelled"
        if row["download_error"]:
            return "failed"
        return "available"

    def model_json(row: dict[str, Any], files: list[dict[str, Any]] | None) -> dict[str, Any]:
        fjson = [file_json(f) for f in files] if files is not None else []
        return {
            "id": row["id"],
            "name": row["name"],
            "repo_modelId": row["repo_modelId"],
            "hub": row["hub"],
            "modelfamily": None,
            "purpose": None,
            "version": None,
            "author": row["author"],
            "source_repository": None,
            "sha_repository": row["sha_repository"],
            "description": row["description"],
            "quantization_details": None,
            "private": False,
            "modelcard": None,
            "hosted": "local",
            "created_timestamp": row["created_timestamp"],
            "modified_timestamp": row["modified_timestamp"],
            "m_files": fjson,
            "files_being_downloaded": [f for f in fjson if f["is_downloading"]],
        }

    def remote_model_json(remote: sources.RemoteModel) -> dict[str, Any]:
        return {
            "id": None,
            "name": remote.name,
            "repo_modelId": remote.repo_id,
            "hub": remote.hub,
            "author": remote.author,
            "sha_repository": remote.revision,
            "description": remote.description,
            "private": False,
            "hosted": "local",
            "m_files": [],
            "files_being_downloaded": [],
        }

    def config_json(row: dict[str, Any]) -> dict[str, Any]:
        return dict(row)

    def status_json(row: dict[str, Any]) -> dict[str, Any]:
        f = file_json(row)
        keys = (
            "id",
            "name",
            "download",
            "is_downloading",
            "storage_location",
            "download_node",
            "download_percentage",
            "download_elapsed",
            "download_remaining",
            "download_throughput",
            "dl_requested_at",
            "download_pid",
            "download_cancelled_at",
            "download_speed",
            "download_eta",
            "size",
            "bytes_downloaded",
            "download_error",
            "status",
        )
        out = {k: f[k] for k in keys}
        out["m_id"] = row["m_id"]
        out["download"] = bool(row["download"])
        return out

    def need_model(model_id: UUID) -> dict[str, Any]:
        row = store().get_model(str(model_id))
        if row is None:
            raise HTTPException(404, f"Model {model_id} not found")
        return row

    def need_file(file_id: UUID) -> dict[str, Any]:
        row = store().get_file(str(file_id))
        if row is None:
            raise HTTPException(404, f"Model file {file_id} not found")
        return row

    def source_error(exc: SourceError) -> HTTPException:
        return HTTPException(
            _SOURCE_STATUS.get(exc.code, 502), exc.message, headers={"X-Kamiwaza-Error-Code": exc.code}
        )

    # Routes
    # The hot read-only routes are ``async``: a sync route costs a hop to the thread pool, which
    # under 32 clients on 2 cores is most of a request's time (docs/benchmarks.md, api).
    @app.get("/api/ping")
    async def ping() -> dict[str, Any]:
        return {"status": "ok", "server": "kamiwaza-local", "version": __version__}

    @app.post("/api/models/")
    def create_model(body: CreateModel) -> dict[str, Any]:
        repo_id = body.repo_modelId or body.name
        if store().get_model_by_repo(repo_id) is not None:
            raise HTTPException(409, f"a model with repo id {repo_id} already exists")
        with store().transaction() as db:
            model_id = store().insert_model(
                db, name=body.name, repo_modelId=repo_id, hub=body.hub, author=body.author, description=body.description
            )
            store().insert_default_config(db, model_id)
        return model_json(store().get_model(model_id) or {}, [])

    def models_body(load_files: bool) -> bytes:
        rows = store().list_models()
        files = store().files_for_models([r["id"] for r in rows]) if load_files else {}
        return json_bytes([model_json(r, files.get(r["id"]) if load_files else None) for r in rows])

    # The model list without files depends on the catalog alone: keep its encoded body until the
    # catalog changes. (With files it carries live download progress, so it is built every time.)
    listed_models: dict[str, Any] = {"version": -1, "body": b""}

    @app.get("/api/models/")
    async def list_models(load_files: bool = False) -> Response:
        if load_files:
            return Response(await run_in_threadpool(models_body, True), media_type="application/json")
        version = store().version()  # read before building: a change made meanwhile forces a rebuild
        if listed_models["version"] != version:
            listed_models.update(body=await run_in_threadpool(models_body, False), version=version)
        return Response(listed_models["body"], media_type="application/json")

    @app.get("/api/models/{model_id}")
    def get_model(model_id: UUID) -> dict[str, Any]:
        row = need_model(model_id)
        return model_json(row, store().list_files(row["id"]))

    @app.delete("/api/models/{model_id}")
    def delete_model(model_id: UUID, force: bool = False) -> dict[str, Any]:
        row = need_model(model_id)
        active = [d for d in store().list_deployments(row["id"]) if d["status"] in ACTIVE]
        if active and not force:
            raise HTTPException(
                409, f"model {row['name']} is used by deployment {active[0]['id']}; stop it first or delete with force"
            )
        for d in active:
            supervisor().stop(d["id"])
        for f in store().list_files(row["id"]):
            downloads().cancel(f["id"])
        store().delete_model(row["id"])
        shutil.rmtree(store().model_dir(row["id"]), ignore_errors=True)
        return {"message": f"Model {row['name']} deleted", "id": row["id"]}

    @app.get("/api/models/{model_id}/configs")
    def model_configs(model_id: UUID, default: bool = False) -> list[dict[str, Any]]:
        need_model(model_id)
        rows = store().list_configs(str(model_id))
        return [config_json(r) for r in rows if r["default"] or not default]

    @app.post("/api/models/search/")
    def search_models(body: ModelSearchRequest) -> dict[str, Any]:
        query = body.query.strip()
        limit = body.limit or 100
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        q = query.lower()
        for row in store().list_models():
            hay = (row["repo_modelId"].lower(), row["name"].lower())
            if (q in hay) if body.exact else any(q in h for h in hay):
                results.append({"id": row["id"], "model": model_json(row, None)})
                seen.add(row["repo_modelId"])
        hub_error = None
        hubs = [h.lower() for h in (body.hubs_to_search or ["*"])]
        if query and ("*" in hubs or any(h in ("hf", "huggingface", "hubshf", "hubsfile", "hubsurl") for h in hubs)):
            remote, err = sources.search(query, limit)
            for r in remote:
                if r.repo_id not in seen and (not body.exact or r.repo_id.lower() == q):
                    results.append({"id": None, "model": remote_model_json(r)})
                    seen.add(r.repo_id)
            if err is not None:
                hub_error = err
        results = results[:limit]
        out: dict[str, Any] = {"results": results, "total_results": len(results)}
        if hub_error is not None:
            # The platform's fields: hub_error is a string; the code is this server's addition.
            out["hub_error"] = hub_error.message
            out["hub_error_code"] = hub_error.code
            out["local_results_only"] = True
        return out

    @app.post("/api/models/download/")
    def download(body: ModelDownloadRequest) -> dict[str, Any]:
        repo_id = body.model.strip()
        hub = sources.normalize_hub(body.hub, repo_id)
        try:
            remote_files = sources.list_files(hub, repo_id, body.version)
            remote = sources.lookup(hub, repo_id) if hub != sources.HUB_HF else None
        except SourceError as exc:
            raise source_error(exc) from exc
        by_name = {f.name: f for f in remote_files}
        if body.files_to_download:
            missing = [n for n in body.files_to_download if n not in by_name]
            if missing:
                raise HTTPException(
                    404,
                    f"{', '.join(missing)} not found in {repo_id}; it has: {', '.join(sorted(by_name)) or 'no files'}",
                )
            wanted = [by_name[n] for n in dict.fromkeys(body.files_to_download)]
        else:
            names = quantization.select_files(list(by_name), quantization.DEFAULT_QUANTIZATION)
            wanted = [by_name[n] for n in names]
        if not wanted:
            raise HTTPException(404, f"{repo_id} has no files to download")
        try:
            sources.check_access(wanted[0])
        except SourceError as exc:
            raise source_error(exc) from exc
        for f in wanted:
            if f.url.startswith("file:"):
                try:
                    read_gguf(sources.local_path(f.url))
                except (GGUFError, SourceError) as exc:
                    raise HTTPException(400, f"{f.name}: {exc}") from exc

        s = store()
        existing = s.get_model_by_repo(repo_id)
        existing_files = {f["name"]: f for f in s.list_files(existing["id"])} if existing else {}
        to_fetch = []
        for f in wanted:
            row = existing_files.get(f.name)
            if row and (file_status(row) == "downloaded" or downloads().is_active(row["id"])):
                continue
            partial = 0
            if row:
                part = _partial(row)
                partial = part.stat().st_size if part is not None and part.exists() else 0
            to_fetch.append({"size": f.size, "partial_bytes": partial})
        try:
            downloads().check_space(to_fetch)
        except DiskFull as exc:
            raise HTTPException(507, str(exc)) from exc

        start: list[str] = []
        ids: list[str] = []
        with s.transaction() as db:
            if existing is None:
                name = remote.name if remote else repo_id.split("/")[-1]
                model_id = s.insert_model(
                    db,
                    name=name,
                    repo_modelId=repo_id,
                    hub=hub,
                    author=remote.author if remote else repo_id.split("/")[0],
                    description=remote.description if remote else None,
                )
            else:
                model_id = existing["id"]
                s.touch_model(db, model_id)
            for f in wanted:
                row = existing_files.get(f.name)
                fields = dict(
                    size=f.size,
                    checksum=f.sha256,
                    checksum_type="sha256" if f.sha256 else None,
                    hub=hub,
                    source_url=f.url,
                )
                if row is None:
                    try:
                        s.blob_path(model_id, f.name)
                    except UnsafeName as exc:
                        raise HTTPException(400, str(exc)) from exc
                    file_id = s.insert_file(
                        db,
                        m_id=model_id,
                        name=f.name,
                        download=True,
                        is_downloading=True,
                        dl_requested_at=now(),
                        **fields,
                    )
                    start.append(file_id)
                else:
                    file_id = row["id"]
                    if file_status(row) != "downloaded" and not downloads().is_active(file_id):
                        s.update_file_in(
                            db,
                            file_id,
                            download=True,
                            is_downloading=True,
                            dl_requested_at=now(),
                            storage_location=None,
                            download_error=None,
                            download_cancelled_at=None,
                            **fields,
                        )
                        start.append(file_id)
                ids.append(file_id)
            if not db.execute("SELECT 1 FROM model_configs WHERE m_id = ?", (model_id,)).fetchone():
                s.insert_default_config(db, model_id)
        for file_id in start:
            downloads().start(file_id)
        message = f"Download started for {len(start)} file(s)" if start else "Files already downloaded or downloading"
        return {"result": True, "message": message, "files": ids, "model_id": model_id}

    @app.get("/api/model_files/")
    def list_files() -> list[dict[str, Any]]:
        return [file_json(r) for r in store().list_files()]

    @app.post("/api/model_files/search/")
    def search_files(body: HubModelFileSearch) -> list[dict[str, Any]]:
        hub = sources.normalize_hub(body.hub, body.model)
        existing = store().get_model_by_repo(body.model)
        registered = {f["name"]: f for f in store().list_files(existing["id"])} if existing else {}
        try:
            remote = sources.list_files(hub, body.model, body.version)
        except SourceError as exc:
            if registered:
                return [file_json(r) for r in registered.values()]
            raise source_error(exc) from exc
        out = []
        for f in remote:
            row = registered.get(f.name)
            if row is not None:
                out.append(file_json(row))
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

    @app.get("/api/model_files/download_status/")
    def download_status(model_ids: list[UUID] | None = Query(default=None)) -> list[dict[str, Any]]:
        wanted = {str(m) for m in model_ids or []}
        rows = store().list_files()
        return [status_json(r) for r in rows if not wanted or r["m_id"] in wanted]

    @app.get("/api/model_files/{file_id}")
    def get_file(file_id: UUID) -> dict[str, Any]:
        return file_json(need_file(file_id))

    @app.delete("/api/model_files/{file_id}")
    def delete_file(file_id: UUID) -> dict[str, Any]:
        row = need_file(file_id)
        downloads().cancel(row["id"])
        path = store().blob_path(row["m_id"], row["name"])
        path.unlink(missing_ok=True)
        partial_path(path).unlink(missing_ok=True)
        store().delete_file(row["id"])
        return {"message": f"Model file {row['name']} deleted", "id": row["id"]}

    @app.delete("/api/model_files/{file_id}/download")
    def cancel_download(file_id: UUID) -> dict[str, Any]:
        row = need_file(file_id)
        if not downloads().cancel(row["id"]):
            return {"result": False, "message": f"No download in progress for {row['name']}", "file_id": row["id"]}
        model_files = store().list_files(row["m_id"])
        if not any(f["storage_location"] or f["is_downloading"] for f in model_files):
            # Nothing of this model is on disk or on its way: don't leave a half-registered model.
            store().delete_model(row["m_id"])
            shutil.rmtree(store().model_dir(row["m_id"]), ignore_errors=True)
        return {
            "result": True,
            "message": f"Download of {row['name']} cancelled",
            "file_id": row["id"],
            "cancelled_at": now(),
        }

    @app.get("/api/model_configs/")
    def list_configs(model_id: UUID | None = None) -> list[dict[str, Any]]:
        return [config_json(r) for r in store().list_configs(str(model_id) if model_id else None)]

    @app.post("/api/model_configs/")
    def create_config(body: CreateModelConfig) -> dict[str, Any]:
        need_model(body.m_id)
        data = body.model_dump(mode="json")
        with store().transaction() as db:
            config_id = store().insert_config(db, **data)
        return config_json(store().get_config(config_id) or {})

    @app.get("/api/model_configs/{config_id}")
    def get_config(config_id: UUID) -> dict[str, Any]:
        row = store().get_config(str(config_id))
        if row is None:
            raise HTTPException(404, f"Model config {config_id} not found")
        return config_json(row)

    @app.put("/api/model_configs/{config_id}")
    def update_config(config_id: UUID, body: CreateModelConfig) -> dict[str, Any]:
        get_config(config_id)
        need_model(body.m_id)
        store().update_config(str(config_id), **body.model_dump(mode="json"))
        return config_json(store().get_config(str(config_id)) or {})

    @app.delete("/api/model_configs/{config_id}")
    def delete_config(config_id: UUID) -> dict[str, Any]:
        get_config(config_id)
        store().delete_config(str(config_id))
        return {"message": f"Model config {config_id} deleted"}

    # Serving
    def instance_json(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": d["instance_id"],
            "deployment_id": d["id"],
            "deployed_at": d["instance_started_at"],
            "container_id": None,
            "node_id": None,
            "host_name": "localhost",
            "listen_port": d["lb_port"] or None,
            "status": d["instance_status"],
        }

    def deployment_json(d: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": d["id"],
            "m_id": d["m_id"],
            "m_config_id": d["m_config_id"],
            "m_file_id": d["m_file_id"],
            "m_name": d["m_name"],
            "engine_name": d["engine_name"],
            "status": d["status"],
            "requested_at": d["requested_at"],
            "created_at": d["requested_at"],
            "deployed_at": d["deployed_at"],
            "duration": None,
            "min_copies": 1,
            "starting_copies": 1,
            "max_copies": 1,
            "location": None,
            "lb_port": d["lb_port"] or 0,
            "autoscaling": False,
            "force_cpu": True,
            "node_resource_type": "cpu",
            "instances": [instance_json(d)] if d["instance_id"] else [],
            "access_path": f"/runtime/models/{d['id']}",
            "serve_path": "/v1",
            "single_node_mode": True,
            "host_ip": "127.0.0.1",
            "canonical_model_id": d["m_name"],
            "last_error_code": d["last_error_code"],
            "last_error_message": d["last_error_message"],
            # Not in the platform's schema; the CLI shows them.
            "stopped_at": d["stopped_at"],
            "pid": d["pid"],
        }

    def need_deployment(deployment_id: UUID) -> dict[str, Any]:
        d = store().get_deployment(str(deployment_id))
        if d is None:
            raise HTTPException(404, f"Deployment {deployment_id} not found")
        return d

    @app.post("/api/serving/deploy_model")
    def deploy_model(body: CreateModelDeployment) -> str:
        model = need_model(body.m_id)
        files = store().list_files(model["id"])
        if body.m_file_id is not None:
            candidates = [f for f in files if f["id"] == str(body.m_file_id)]
            if not candidates:
                raise HTTPException(404, f"Model file {body.m_file_id} not found in {model['name']}")
        else:
            stored = [f for f in files if f["storage_location"] and not f["is_downloading"]]
            preferred = quantization.select_files([f["name"] for f in stored], quantization.DEFAULT_QUANTIZATION)
            # GGUF weights first (the default quantization among them), then anything else stored.
            candidates = sorted(
                stored, key=lambda f: (not f["name"].lower().endswith(".gguf"), f["name"] not in preferred, f["name"])
            )
        if not candidates or not candidates[0]["storage_location"]:
            raise HTTPException(400, f"model {model['name']} is not downloaded; pull it first")
        file_row = candidates[0]
        configs = store().list_configs(model["id"])
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
        return supervisor().deploy(
            model=model, config=config, file_row=file_row, engine_name=engine.name, requested_port=body.lb_port or None
        )

    @app.get("/api/serving/deployments")
    async def list_deployments(model_id: UUID | None = None) -> Response:
        return raw_json([deployment_json(d) for d in store().list_deployments(str(model_id) if model_id else None)])

    @app.get("/api/serving/deployment/{deployment_id}")
    def get_deployment(deployment_id: UUID) -> dict[str, Any]:
        return deployment_json(need_deployment(deployment_id))

    @app.get("/api/serving/deployment/{deployment_id}/status")
    def deployment_status(deployment_id: UUID) -> str:
        return str(need_deployment(deployment_id)["status"])

    @app.delete("/api/serving/deployment/{deployment_id}")
    def stop_deployment(deployment_id: UUID, force: bool = False) -> bool:
        d = need_deployment(deployment_id)
        if d["status"] in ACTIVE:
            supervisor().stop(d["id"])
        return True

    @app.get("/api/serving/deployment/{deployment_id}/logs")
    def deployment_logs(deployment_id: UUID, lines: int = Query(default=500, ge=1, le=10000)) -> dict[str, Any]:
        d = need_deployment(deployment_id)
        path = supervisor().log_path(d["id"])
        all_lines = tail(path, 10**9) if path.exists() else []
        kept = all_lines[-lines:]
        return {
            "deployment_id": d["id"],
            "log_file_path": str(path),
            "logs": kept,
            "total_lines_seen": len(all_lines),
            "current_lines_stored": len(kept),
            "compressed": False,
            "capture_active": supervisor().is_capturing(d["id"]),
            "engine_type": d["engine_name"],
            "container_id": None,
        }

    @app.get("/api/serving/model_instances")
    def model_instances(deployment_id: UUID | None = None) -> list[dict[str, Any]]:
        rows = store().list_deployments()
        return [
            instance_json(d)
            for d in rows
            if d["instance_id"] and (deployment_id is None or d["id"] == str(deployment_id))
        ]

    @app.get("/api/serving/health")
    def serving_health() -> list[dict[str, str]]:
        # The platform's shape (and the SDK's get_health): one entry per active deployment.
        return [
            {"id": d["id"], "m_name": d["m_name"] or "", "status": d["status"], "engine_name": d["engine_name"] or ""}
            for d in store().list_deployments()
            if d["status"] in ACTIVE
        ]

    @app.api_route(
        "/runtime/models/{deployment_id}/v1/{path:path}",
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        include_in_schema=False,
    )
    async def runtime(deployment_id: UUID, path: str, request: Request) -> Any:
        d = store().get_deployment(str(deployment_id))
        if d is None:
            return JSONResponse({"detail": f"Deployment {deployment_id} not found"}, status_code=404)
        if d["status"] != "DEPLOYED" or not d["lb_port"]:
            return JSONResponse(
                {"detail": f"deployment {deployment_id} is not ready (status {d['status']})"}, status_code=503
            )
        return await state["gateway"].forward(request, int(d["lb_port"]), path)

    return app
