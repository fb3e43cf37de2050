"""``/api/models/*``: the model catalog (register, list, get, delete, configs), hub search, and
the download request that registers a model and starts its files' downloads.

Hub search and the download request wait for other hosts (metadata, a URL's HEAD): they run in
``sources.OUTBOUND`` through ``outbound``, never in the thread pool the other sync routes share,
so a few slow hosts cannot hold up the catalog for everyone.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ... import quantization
from ...statuses import ACTIVE
from .. import engines, sources
from ..downloads import DiskFull
from ..sources import SourceError
from ..store import UnsafeName, now
from . import planning
from .context import ServerContext, need_model, source_error
from .shapes import config_json, file_status, json_bytes, model_json, partial_file, remote_model_json, status_json

T = TypeVar("T")


async def outbound(fn: Callable[[], T]) -> T:
    """Run a route's blocking body in the outbound pool; 503 when that pool is full."""
    try:
        return await sources.OUTBOUND.run(fn)
    except sources.Busy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None


class ModelSearchRequest(BaseModel):
    query: str
    hubs_to_search: list[str] | None = None
    exact: bool | None = False
    limit: int | None = Field(default=100, ge=1, le=1000)


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


def add_routes(api: APIRouter, ctx: ServerContext) -> None:
    @api.post("/api/models/")
    def create_model(body: CreateModel) -> dict[str, Any]:
        repo_id = body.repo_modelId or body.name
        if ctx.store.get_model_by_repo(repo_id) is not None:
            raise HTTPException(409, f"a model with repo id {repo_id} already exists")
        with ctx.store.transaction() as db:
            model_id = ctx.store.insert_model(
                db, name=body.name, repo_modelId=repo_id, hub=body.hub, author=body.author, description=body.description
            )
            ctx.store.insert_default_config(db, model_id)
        return model_json(ctx, ctx.store.get_model(model_id) or {}, [])

    def models_body(load_files: bool) -> bytes:
        rows = ctx.store.list_models()
        files = ctx.store.files_for_models([r["id"] for r in rows]) if load_files else {}
        return json_bytes([model_json(ctx, r, files.get(r["id"]) if load_files else None) for r in rows])

    # The model list without files depends on the catalog alone: keep its encoded body until the
    # catalog changes. (With files it carries live download progress, so it is built every time.)
    listed_models: dict[str, Any] = {"version": -1, "body": b""}

    @api.get("/api/models/")
    async def list_models(load_files: bool = False) -> Response:  # async: a hot read-only route
        if load_files:
            return Response(await run_in_threadpool(models_body, True), media_type="application/json")
        version = ctx.store.version()  # read before building: a change made meanwhile forces a rebuild
        if listed_models["version"] != version:
            listed_models.update(body=await run_in_threadpool(models_body, False), version=version)
        return Response(listed_models["body"], media_type="application/json")

    # Fixed paths before /{model_id}, which would claim them (and answer 422: not a UUID).
    @api.get("/api/models/pending_deployments")
    def pending_deployments() -> dict[str, Any]:
        # No deploy-after-download flags exist here (download_and_deploy is refused): only downloads.
        downloading = ctx.store.downloading_files()
        models = {m["id"]: m for m in ctx.store.list_models()}
        repos = sorted({models[f["m_id"]]["repo_modelId"] for f in downloading if f["m_id"] in models})
        return {
            "pending_deployments": [],
            "downloading_models": repos,
            "deployment_flags": {},
            "active_downloads": [status_json(ctx, f) for f in downloading],
            "total_pending": 0,
            "total_downloading": len(repos),
        }

    @api.post("/api/models/cleanup_stale_deployments")
    def cleanup_stale_deployments() -> dict[str, Any]:
        return {
            "cleaned_count": 0,
            "cleaned_flags": [],
            "message": "No stale deployment flags: the local server deploys only when asked",
        }

    @api.get("/api/models/{model_id}")
    def get_model(model_id: UUID) -> dict[str, Any]:
        row = need_model(ctx.store, model_id)
        return model_json(ctx, row, ctx.store.list_files(row["id"]))

    @api.delete("/api/models/{model_id}")
    def delete_model(model_id: UUID, force: bool = False) -> dict[str, Any]:
        row = need_model(ctx.store, model_id)
        active = [d for d in ctx.store.list_deployments(row["id"]) if d["status"] in ACTIVE]
        if active and not force:
            raise HTTPException(
                409, f"model {row['name']} is used by deployment {active[0]['id']}; stop it first or delete with force"
            )
        for d in active:
            ctx.supervisor.stop(d["id"])
        for f in ctx.store.list_files(row["id"]):
            ctx.downloads.cancel(f["id"])
        ctx.store.delete_model(row["id"])
        shutil.rmtree(ctx.store.model_dir(row["id"]), ignore_errors=True)
        return {"message": f"Model {row['name']} deleted", "id": row["id"]}

    @api.get("/api/models/{model_id}/deployment_info")
    def deployment_info(model_id: UUID) -> dict[str, Any]:
        row = need_model(ctx.store, model_id)
        active = [d for d in ctx.store.list_deployments(row["id"]) if d["status"] in ACTIVE]
        if not active:
            return {"deployed": False}
        d = active[0]
        return {
            "deployed": True,
            "deployment_id": d["id"],
            "status": d["status"],
            "engine_type": d["engine_name"],
            "lb_port": d["lb_port"] or 0,
            "access_path": f"/runtime/models/{d['id']}",
            "m_file_id": d["m_file_id"],
            "m_config_id": d["m_config_id"],
        }

    @api.get("/api/models/{model_id}/memory_usage")
    def memory_usage(model_id: UUID) -> int:
        p = planning.plan(ctx, need_model(ctx.store, model_id), None, None)
        return planning.estimate(ctx, p).total

    @api.get("/api/models/{model_id}/configs")
    def model_configs(model_id: UUID, default: bool = False) -> list[dict[str, Any]]:
        need_model(ctx.store, model_id)
        rows = ctx.store.list_configs(str(model_id))
        return [config_json(r) for r in rows if r["default"] or not default]

    @api.post("/api/models/search/")
    async def search_models(body: ModelSearchRequest) -> dict[str, Any]:
        return await outbound(lambda: _search_models(body))

    def _search_models(body: ModelSearchRequest) -> dict[str, Any]:
        query = body.query.strip()
        limit = body.limit or 100
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        q = query.lower()
        for row in ctx.store.list_models():
            hay = (row["repo_modelId"].lower(), row["name"].lower())
            if (q in hay) if body.exact else any(q in h for h in hay):
                results.append({"id": row["id"], "model": model_json(ctx, row, None)})
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

    @api.post("/api/models/download/")
    async def download(body: ModelDownloadRequest) -> dict[str, Any]:
        return await outbound(lambda: _download(body))

    def _download(body: ModelDownloadRequest) -> dict[str, Any]:
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
            try:
                names = quantization.choose(list(by_name)).files
            except quantization.NoMatch as exc:
                raise HTTPException(404, f"{repo_id} has {exc}") from exc
            wanted = [by_name[n] for n in names]
        if not wanted:
            raise HTTPException(404, f"{repo_id} has no files to download")
        if not any(quantization.is_weight(n) for n in by_name):
            # Refused before a byte is fetched: llama.cpp loads GGUF files only. (The repo is judged,
            # not the request: repairing a vision model may ask for its projector alone.)
            raise HTTPException(422, cannot_run(repo_id, list(by_name)))
        s = ctx.store
        downloads = ctx.downloads
        existing = s.get_model_by_repo(repo_id)
        existing_files = {f["name"]: f for f in s.list_files(existing["id"])} if existing else {}
        try:
            if hub == sources.HUB_HF:  # a URL's own HEAD was made by list_files
                sources.check_access(wanted[0])
            for f in wanted:
                if f.url.startswith("file:"):
                    sources.check_local_gguf(f.url)
            # A new listing must not reuse a path the model's earlier files hold under another name.
            sources.check_listing(repo_id, [*existing_files, *(f.name for f in wanted if f.name not in existing_files)])
        except SourceError as exc:
            raise source_error(exc) from exc
        to_fetch = []
        for f in wanted:
            row = existing_files.get(f.name)
            if row and (file_status(row) == "downloaded" or downloads.is_active(row["id"])):
                continue
            partial = 0
            if row:
                part = partial_file(s, row)
                partial = part.stat().st_size if part is not None and part.exists() else 0
            to_fetch.append({"size": f.size, "partial_bytes": partial})
        try:
            downloads.check_space(to_fetch)
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
                    if file_status(row) != "downloaded" and not downloads.is_active(file_id):
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
            downloads.start(file_id)
        message = f"Download started for {len(start)} file(s)" if start else "Files already downloaded or downloading"
        return {"result": True, "message": message, "files": ids, "model_id": model_id}


def cannot_run(repo_id: str, names: list[str]) -> str:
    """Why this server will not take a repo without GGUF weights, and what would run it."""
    kinds = sorted({n.rsplit(".", 1)[-1].lower() for n in names if n.lower().endswith(engines.WEIGHT_SUFFIXES)})
    what = f"its weights are {', '.join(kinds)}" if kinds else "it has no model weights this server knows"
    return (
        f"{repo_id} has no GGUF file ({what}): this local server runs llama.cpp, which loads GGUF only; "
        "a Kamiwaza cluster runs such models with vLLM"
    )
