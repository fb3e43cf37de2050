"""Which file and config a deployment of a model uses, and what it would take in memory.

One rule for every route that plans a deployment: ``POST /serving/deploy_model``,
``POST /serving/estimate_model_vram``, ``/models/{id}/memory_usage``,
``/model_files/{id}/memory_usage`` and ``POST /models/deploy_after_download/{key}``. The memory
figure is memory.py's estimate from the GGUF header (weights by tensor type, KV cache from layers,
heads and context, the engine's prompt cache and compute), for the slots and context llama.cpp
would be launched with: the same number the deploy memory check (supervisor.py) admits against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import HTTPException

from ... import quantization
from .. import engines, memory
from ..supervisor import estimate_deployment, find_projector
from .context import ServerContext


@dataclass(frozen=True)
class Plan:
    model: dict[str, Any]
    file_row: dict[str, Any]
    candidates: list[dict[str, Any]]
    config: dict[str, Any]


def stored_weights(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A model's downloaded weight files, the one a deploy picks first: GGUF before anything else,
    the first part of the default quantization (quantization.choose) among them, then by name."""
    stored = [
        f
        for f in files
        if f["storage_location"] and not f["is_downloading"] and not quantization.is_projector(f["name"])
    ]
    try:
        preferred = quantization.choose([f["name"] for f in stored]).first  # the tag grammar's default
    except (quantization.NoMatch, IndexError):
        preferred = None
    return sorted(stored, key=lambda f: (not f["name"].lower().endswith(".gguf"), f["name"] != preferred, f["name"]))


def plan(ctx: ServerContext, model: dict[str, Any], file_id: UUID | None, config_id: UUID | None) -> Plan:
    """The file and config a deployment of ``model`` uses; 404 for a named file or config that is not
    the model's, 400 when nothing of it is downloaded or it has no config."""
    files = ctx.store.list_files(model["id"])
    if file_id is not None:
        candidates = [f for f in files if f["id"] == str(file_id)]
        if not candidates:
            raise HTTPException(404, f"Model file {file_id} not found in {model['name']}")
    else:
        candidates = stored_weights(files)
    if not candidates or not candidates[0]["storage_location"]:
        raise HTTPException(400, f"model {model['name']} is not downloaded; pull it first")
    configs = ctx.store.list_configs(model["id"])
    if config_id is not None:
        config = next((c for c in configs if c["id"] == str(config_id)), None)
        if config is None:
            raise HTTPException(404, f"Model config {config_id} not found for {model['name']}")
    else:
        config = next((c for c in configs if c["default"]), configs[0] if configs else None)
        if config is None:
            raise HTTPException(400, f"model {model['name']} has no configuration")
    return Plan(model, candidates[0], candidates, config)


def estimate(ctx: ServerContext, p: Plan, slots: int | None = None) -> memory.MemoryEstimate:
    """What the engine for ``p`` would take; 400 for a config the engine refuses."""
    try:
        return estimate_deployment(
            Path(p.file_row["storage_location"]),
            dict(p.config.get("config") or {}),
            slots,
            find_projector(ctx.store, p.model["id"]),
        )
    except engines.EngineUnavailable as exc:
        raise HTTPException(400, str(exc)) from exc


def estimate_json(p: Plan, need: memory.MemoryEstimate) -> dict[str, Any]:
    """The platform's estimate keys (``computed_vram_estimate``, ``estimation_source``) and the parts."""
    return {
        "computed_vram_estimate": need.total,
        "estimation_source": "gguf",
        # One node, and llama.cpp runs on its CPU: the memory that counts is this machine's.
        "highest_node_vram": None,
        "m_id": p.model["id"],
        "m_file_id": p.file_row["id"],
        "m_config_id": p.config["id"],
        "file_name": p.file_row["name"],
        "weights": need.weights,
        "weights_by_type": memory.weights_by_type(Path(p.file_row["storage_location"])),
        "kv_cache": need.kv_cache,
        "prompt_cache": need.prompt_cache,
        "compute": need.compute,
        "slots": need.slots,
        "context_per_slot": need.context_per_slot,
        "summary": need.describe(),
    }
