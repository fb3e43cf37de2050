"""The platform's JSON shapes, built from store rows and live download progress.

Model, ModelFile, ModelDownloadStatus, ModelConfig, ModelDeployment and ModelInstance as
kamiwaza-api.md draws them, plus the extra keys the CLI reads (the SDK ignores them); and
``json_bytes`` / ``raw_json`` for lists large enough that FastAPI's encoder shows.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.responses import Response

from .. import sources
from ..downloads import human_rate, mmss, partial_path
from ..store import Store, UnsafeName
from .context import ServerContext


def json_bytes(data: Any) -> bytes:
    """Lists can be large: serialize them straight to JSON, skipping FastAPI's per-field encoder
    (the rows are already plain JSON types)."""
    return json.dumps(data, separators=(",", ":")).encode()


def raw_json(data: Any) -> Response:
    return Response(json_bytes(data), media_type="application/json")


def partial_file(store: Store, row: dict[str, Any]) -> Path | None:
    """Where a file's download in progress is written, or None for a name that is not a safe path."""
    try:
        return partial_path(store.blob_path(row["m_id"], row["name"]))
    except (UnsafeName, ValueError):
        return None


def _elapsed(row: dict[str, Any]) -> str | None:
    if not row["is_downloading"] or not row["download_started_at"]:
        return None
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


def file_json(ctx: ServerContext, row: dict[str, Any]) -> dict[str, Any]:
    progress = ctx.downloads.progress(row["id"]) if row["is_downloading"] else None
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
        part = partial_file(ctx.store, row)
        done = part.stat().st_size if part is not None and part.exists() else 0
        pct = int(done * 100 / size) if size else 0
    status = file_status(row)
    # A file gone from disk is not stored any more: the SDK's readiness rule then says so too.
    stored = None if status == "missing" else row["storage_location"]
    if status == "missing":
        done = pct = 0
    return {
        "id": row["id"],
        "name": row["name"],
        "size": size,
        "storage_type": "file",
        "storage_host": "localhost",
        "storage_location": stored,
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
        "status": status,
    }


_STATUS_KEYS = (
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


def status_json(ctx: ServerContext, row: dict[str, Any]) -> dict[str, Any]:
    f = file_json(ctx, row)
    out = {k: f[k] for k in _STATUS_KEYS}
    out["m_id"] = row["m_id"]
    out["download"] = bool(row["download"])
    return out


def model_json(ctx: ServerContext, row: dict[str, Any], files: list[dict[str, Any]] | None) -> dict[str, Any]:
    fjson = [file_json(ctx, f) for f in files] if files is not None else []
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
        "force_cpu": bool(d["force_cpu"]),
        "max_concurrent_requests": d["max_concurrent_requests"],
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
        "m_file_name": d.get("m_file_name"),
        "stopped_at": d["stopped_at"],
        "pid": d["pid"],
        "context_per_slot": d["context_per_slot"],
        "engine_threads": d["engine_threads"],
    }
