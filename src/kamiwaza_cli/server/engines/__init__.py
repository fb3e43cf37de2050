"""Inference engines behind one small interface, and the choice of engine for a model.

An ``Engine`` turns (model file, config, deployment) into the argv of one server process
that speaks the OpenAI API on 127.0.0.1:port behind a key, says how to tell it is healthy,
and how to read a failure from its log. llama.cpp is the first; vLLM or MLX can follow
by adding a module and a line to ``ENGINES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class EngineUnavailable(Exception):
    """No engine on this server can run these files (the message says what is missing)."""


@dataclass(frozen=True)
class Deployment:
    """What a deployment asks of its engine, beyond the model file and the model's config."""

    port: int  # the engine's private loopback port
    api_key: str  # the engine's own key, known only to the server
    slots: int | None = None  # the platform's max_concurrent_requests
    context: int | None = None  # tokens per slot, chosen at admission; None: the config's or the engine's default
    force_cpu: bool = False
    projector: Path | None = None  # a vision model's mmproj file


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    health_path: str  # GET on 127.0.0.1:port answering 200 means ready
    env: dict[str, str]
    facts: dict[str, Any] = field(default_factory=dict)  # what the engine was given: slots, context, threads


@dataclass(frozen=True)
class Failure:
    """Why an engine failed, read from its log: the platform's error code, the cause in one line
    (the engine's own words where they say it), and what the user can do about it."""

    code: str  # MODEL_LOADING_FAILURE, OOM, CUDA_ERROR, INVALID_CONFIG or CONTAINER_EXITED
    cause: str
    next_step: str


class Engine(Protocol):
    name: str

    def can_run(self, files: list[Path]) -> bool: ...

    def check_installed(self) -> None: ...

    def launch(self, model_file: Path, config: Mapping[str, Any], deployment: Deployment) -> LaunchSpec: ...

    def classify_failure(self, log_tail: list[str], model: str) -> Failure: ...


# Files that ride along with weights (configs, tokenizers, cards) and say nothing about the engine.
# Files that hold model weights in the formats engines load (anything else, LICENSE or config.json,
# is not a "weight type" to name in an error).
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".npz")


def engines() -> list[Engine]:
    from .llamacpp import LlamaCpp

    return [LlamaCpp()]


def pick(files: list[Path], requested: str | None = None) -> Engine:
    """The engine for these model files (GGUF -> llama.cpp), or the one asked for by name."""
    available = engines()
    if requested:
        for engine in available:
            if engine.name == requested:
                return engine
        names = ", ".join(e.name for e in available)
        raise EngineUnavailable(f"engine {requested!r} is not available on this server (it has: {names})")
    for engine in available:
        if engine.can_run(files):
            return engine
    kinds = sorted({f.suffix.lower() for f in files if f.suffix.lower() in WEIGHT_SUFFIXES}) or ["no weight files"]
    raise EngineUnavailable(
        f"no engine here can run {', '.join(kinds)} weights: the local server runs GGUF files with llama.cpp; "
        "safetensors need vLLM or MLX, which are not installed"
    )
