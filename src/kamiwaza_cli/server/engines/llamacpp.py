"""The llama.cpp engine: ``python -m llama_cpp.server`` from llama-cpp-python.

GGUF files without a chat template (base models such as the small gemma on PyPI)
make llama-cpp-python fall back to the llama-2 format, which gives empty replies;
the chat format is then chosen from the GGUF's architecture instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from ...gguf import GGUFError, read_gguf
from . import EngineUnavailable, LaunchSpec

DEFAULT_CONTEXT = 4096

# Architecture prefix (general.architecture) -> llama-cpp-python chat_format, for GGUFs without a template.
CHAT_FORMATS = (
    ("gemma", "gemma"),
    ("qwen", "chatml"),
    ("llama", "llama-3"),
    ("mistral", "mistral-instruct"),
    ("phi", "chatml"),
)


def chat_format_for(architecture: str | None) -> str:
    arch = (architecture or "").lower()
    for prefix, fmt in CHAT_FORMATS:
        if arch.startswith(prefix):
            return fmt
    return "chatml"


class LlamaCpp:
    name = "llamacpp"

    def can_run(self, files: list[Path]) -> bool:
        return any(f.suffix.lower() == ".gguf" for f in files)

    def check_installed(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EngineUnavailable(
                "llama-cpp-python is not installed in the server's environment; install it with: "
                "make install (or pip install 'llama-cpp-python[server]')"
            )

    def launch(self, model_file: Path, port: int, config: dict[str, Any]) -> LaunchSpec:
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_file),
            "--host",
            "127.0.0.1",  # engines are reached through the gateway or loopback only
            "--port",
            str(port),
            "--n_ctx",
            str(int(config.get("n_ctx") or config.get("max_model_len") or DEFAULT_CONTEXT)),
            # Requests queue instead of cutting off the reply being streamed (llama-cpp-python's default).
            "--interrupt_requests",
            "False",
            "--model_alias",
            str(config.get("model_alias") or model_file.stem),
        ]
        if config.get("n_threads"):
            argv += ["--n_threads", str(int(config["n_threads"]))]
        chat_format = config.get("chat_format")
        if not chat_format:
            try:
                info = read_gguf(model_file)
            except (GGUFError, OSError):
                info = None  # let llama.cpp report what is wrong with the file
            if info is not None and not info.has_chat_template:
                chat_format = chat_format_for(info.architecture)
        if chat_format:
            argv += ["--chat_format", str(chat_format)]
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
        return LaunchSpec(argv=argv, health_path="/v1/models", env={k: v for k, v in env.items() if v})

    def classify_failure(self, log_tail: list[str]) -> str:
        text = "\n".join(log_tail).lower()
        if (
            "failed to load model" in text
            or "error loading model" in text
            or "gguf_init" in text
            or "valueerror: failed to load" in text
        ):
            return "MODEL_LOADING_FAILURE"
        if "out of memory" in text or "cannot allocate" in text or "std::bad_alloc" in text:
            return "OOM"
        return "CONTAINER_EXITED"
