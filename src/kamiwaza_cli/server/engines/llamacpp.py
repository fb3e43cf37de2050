"""The llama.cpp engine: llama.cpp's own ``llama-server``, the engine ollama, LM Studio and
RamaLama run, with parallel slots and continuous batching.

``launch`` turns a model file and a deployment's settings into one ``llama-server`` argv:
- threads: the machine's physical cores, or ``KAMIWAZA_ENGINE_THREADS`` (``n_threads`` in the model
  config overrides either): ggml's threads meet at a barrier after every operation, so two engines
  each given every core, generating at once, wait on each other's descheduled threads (2 cores, two
  engines of 2 threads: 15.5 tokens/s each, against 50.8 each with 1 thread; bench/shared_cores.py);
- slots: ``max_concurrent_requests`` of the deployment (default 4), each with the whole
  per-slot context, so four users get four streams at once instead of a queue;
- context per slot: the deployment's (chosen when it was admitted, supervisor.py), else ``n_ctx``
  (or ``max_model_len``) of the model config; one asked above the model's trained length
  (``<arch>.context_length``) or below ``MIN_CONTEXT`` is refused, as vLLM refuses a
  ``max_model_len`` it cannot serve; ``plan`` decides slots and context before a deploy is admitted
  (the memory check) and at launch, so the two never differ;
- the host prompt cache (``--cache-ram``): as large as the KV cache (server/memory.py), not
  llama-server's 8 GiB default, so an engine stays within what its deploy was admitted for;
- chat template: the GGUF's own Jinja template; for a GGUF without one, llama.cpp's built-in
  template for its architecture (a base model framed as llama-2 gives empty replies);
  ``chat_template`` in the config overrides either way (a built-in name or Jinja source);
- a projector file (``mmproj``) for vision models; ``--embeddings`` for embedding models;
- GPU: every layer that fits (llama.cpp's ``auto`` fit) when the binary has a GPU device,
  none when the deployment forces the CPU.
The engine's API key travels in its environment (``LLAMA_API_KEY``), never in argv, where
``ps`` would show it to every user of the machine.

The binary: ``$KAMIWAZA_LLAMA_SERVER``, else the one ``make install`` built beside the
interpreter (build.py), else ``llama-server`` on PATH.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ... import portable
from ...gguf import GGUFError, GGUFInfo, read_gguf
from .. import memory
from ..shared import env_whole_number
from . import Deployment, EngineUnavailable, Failure, LaunchSpec
from .build import BINARY

log = logging.getLogger(__name__)
THREADS_ENV = "KAMIWAZA_ENGINE_THREADS"

DEFAULT_CONTEXT = 4096  # when the supervisor chose none (no memory figure to choose from)
MAX_DEFAULT_CONTEXT = 8192  # the most a deployment gets without asking (ollama's default is less)
# Fewer tokens than this leave no room for a template, a question and an answer.
MIN_CONTEXT = 512
DEFAULT_SLOTS = 4
MAX_SLOTS = 64

# general.architecture prefix -> llama.cpp built-in chat template, for GGUFs that carry none.
BUILTIN_TEMPLATES = (
    ("gemma", "gemma"),
    ("qwen", "chatml"),
    ("llama4", "llama4"),
    ("llama", "llama3"),
    ("mistral", "mistral-v7"),
    ("phi3", "phi3"),
    ("phi", "phi4"),
    ("deepseek", "deepseek3"),
    ("granite", "granite"),
    ("exaone", "exaone3"),
)
# Architectures that only embed; others embed when their GGUF declares a pooling type.
EMBEDDING_ARCHITECTURES = ("bert", "nomic-bert", "jina-bert-v2", "jina-bert-v3", "neo-bert", "modern-bert", "t5encoder")


def builtin_template_for(architecture: str | None) -> str:
    arch = (architecture or "").lower()
    for prefix, name in BUILTIN_TEMPLATES:
        if arch.startswith(prefix):
            return name
    return "chatml"


def is_embedding_model(info: GGUFInfo | None) -> bool:
    if info is None or not info.architecture:
        return False
    return info.architecture in EMBEDDING_ARCHITECTURES or f"{info.architecture}.pooling_type" in info.metadata


def find_binary(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if env.get("KAMIWAZA_LLAMA_SERVER"):
        return Path(env["KAMIWAZA_LLAMA_SERVER"]).expanduser()
    beside = Path(sys.executable).parent / BINARY
    if beside.is_file():
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


@functools.lru_cache(maxsize=8)
def gpu_devices(binary: str, mtime_ns: int) -> tuple[str, ...]:
    """The GPU devices this llama-server build can use (``--list-devices``), cached per binary."""
    try:
        out = subprocess.run([binary, "--list-devices"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return parse_devices(out.stdout + out.stderr)


def parse_devices(text: str) -> tuple[str, ...]:
    # "Available devices:\n  Metal: Apple M2 (...)\n  CUDA0: NVIDIA L4 (...)"; a CPU build lists none.
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().lower().startswith("available devices"))
    except StopIteration:
        return ()
    devices = []
    for ln in lines[start + 1 :]:
        name = ln.strip()
        if not name or ":" not in name:
            break
        if not name.lower().startswith("cpu"):
            devices.append(name)
    return tuple(devices)


def _int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if value not in (None, "", 0):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise EngineUnavailable(f"model config field {key!r} must be a whole number, not {value!r}") from None
    return None


def requested_context(config: Mapping[str, Any]) -> int | None:
    """The context per slot the model config asks for (``n_ctx``, else ``max_model_len``), if any."""
    return _int(config, "n_ctx", "max_model_len")


def check_context(tokens: int, trained: int | None) -> int:
    """``tokens`` when the engine can give it; EngineUnavailable, with the bounds, when not."""
    if tokens < MIN_CONTEXT:
        raise EngineUnavailable(
            f"a context (n_ctx) of {tokens} tokens is too small: ask for at least {MIN_CONTEXT} (--ctx {MIN_CONTEXT})"
        )
    if trained and tokens > trained:
        raise EngineUnavailable(
            f"a context (n_ctx) of {tokens} tokens is more than the {trained} this model was trained for: "
            f"ask for at most {trained} (--ctx {trained})"
        )
    return tokens


def plan_context(config: Mapping[str, Any], trained: int | None, context: int | None = None) -> int:
    """The deployment's ``context`` when it has one, else the config's, else the default (capped at
    the trained length); an asked-for context outside the engine's bounds is refused."""
    wanted = context or requested_context(config)
    if wanted is None:
        return min(DEFAULT_CONTEXT, trained) if trained else DEFAULT_CONTEXT
    return check_context(wanted, trained)


def plan(
    config: Mapping[str, Any], slots: int | None, info: GGUFInfo | None, context: int | None = None
) -> tuple[int, int]:
    """(slots, context per slot) of a deployment: the deployment's slots, else the config's, else 4;
    the deployment's context, else the config's, within the model's trained length."""
    slots = slots or _int(config, "max_concurrent_requests", "n_parallel") or DEFAULT_SLOTS
    if not 1 <= slots <= MAX_SLOTS:
        raise EngineUnavailable(f"max_concurrent_requests must be between 1 and {MAX_SLOTS}, not {slots}")
    return slots, plan_context(config, info.context_length if info else None, context)


def read_info(model_file: Path) -> GGUFInfo | None:
    try:
        return read_gguf(model_file)
    except (GGUFError, OSError):
        return None  # let llama.cpp say what is wrong with the file


class LlamaCpp:
    name = "llamacpp"

    def can_run(self, files: list[Path]) -> bool:
        return any(f.suffix.lower() == ".gguf" for f in files)

    def check_installed(self) -> None:
        binary = find_binary()
        if binary is None or not binary.is_file():
            where = f"KAMIWAZA_LLAMA_SERVER={binary}" if binary else "beside the interpreter or on PATH"
            raise EngineUnavailable(
                f"llama.cpp's llama-server was not found ({where}); build it with: make install "
                "(or python -m kamiwaza_cli.server.engines.build)"
            )
        if not os.access(binary, os.X_OK):
            raise EngineUnavailable(f"llama-server at {binary} is not executable; rebuild it with: make install")

    def launch(self, model_file: Path, config: Mapping[str, Any], deployment: Deployment) -> LaunchSpec:
        binary = find_binary()
        if binary is None:
            self.check_installed()
        assert binary is not None
        info = read_info(model_file)
        slots, per_slot = plan(config, deployment.slots, info, deployment.context)
        threads = _int(config, "n_threads") or env_whole_number(THREADS_ENV, portable.physical_cores(), 1, log)
        alias = str(config.get("model_alias") or model_file.stem)
        argv = [
            str(binary),
            "--model", str(model_file),
            "--host", "127.0.0.1",  # engines are reached only through the server's gateway and lb_port
            "--port", str(deployment.port),
            "--alias", alias,
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--parallel", str(slots),
            # Each slot gets the whole per-slot context (as ollama's num_parallel does), in its own cache.
            "--ctx-size", str(per_slot * slots),
            "--no-kv-unified",
            "--no-webui",
        ]  # fmt: skip
        if info is not None:
            kv = memory.kv_cache_bytes(info, slots=slots, context_per_slot=per_slot)
            argv += ["--cache-ram", str(memory.prompt_cache_bytes(kv) // memory.MIB)]
        argv += self._template_args(config, info)
        embeddings = bool(config.get("embeddings")) or is_embedding_model(info)
        if embeddings:
            argv.append("--embeddings")
            if info is None or f"{info.architecture}.pooling_type" not in info.metadata:
                # A generative model asked to embed has no pooling of its own; OpenAI's route needs one.
                argv += ["--pooling", str(config.get("pooling") or "mean")]
        if deployment.projector is not None:
            argv += ["--mmproj", str(deployment.projector)]
        argv += self._gpu_args(binary, config, deployment.force_cpu)
        facts = {"slots": slots, "context_per_slot": per_slot, "threads": threads, "embeddings": embeddings}
        return LaunchSpec(argv=argv, health_path="/health", env={"LLAMA_API_KEY": deployment.api_key}, facts=facts)

    @staticmethod
    def _template_args(config: Mapping[str, Any], info: GGUFInfo | None) -> list[str]:
        override = config.get("chat_template") or config.get("chat_format")
        if override:
            text = str(override)
            # Jinja source gets the Jinja engine; a built-in name gets llama.cpp's own formatter.
            return ["--jinja", "--chat-template", text] if "{" in text else ["--no-jinja", "--chat-template", text]
        if info is not None and not info.has_chat_template:
            return ["--no-jinja", "--chat-template", builtin_template_for(info.architecture)]
        return ["--jinja"]  # the GGUF's own template: tool calls and system prompts as the model expects

    @staticmethod
    def _gpu_args(binary: Path, config: Mapping[str, Any], force_cpu: bool) -> list[str]:
        if force_cpu:
            return ["--n-gpu-layers", "0"]
        try:
            devices = gpu_devices(str(binary), binary.stat().st_mtime_ns)
        except OSError:
            devices = ()
        if not devices:
            return []
        # llama.cpp's auto fit offloads every layer that fits in the devices' free memory.
        return ["--n-gpu-layers", str(config.get("n_gpu_layers") or "auto")]

    def classify_failure(self, log_tail: list[str], model: str) -> Failure:
        return classify_failure(log_tail, model)


# What llama.cpp prints when it cannot start, as of the pinned build (each pattern was seen with a
# real bad file: tests/test_serving_errors.py). The first class whose pattern matches a line wins,
# so the specific causes come before "failed to load model", which every loading error also prints.
_ARCHITECTURE = re.compile(r"unknown model architecture: '([^']*)'")
_SPLIT = re.compile(r"failed to (?:load GGUF split from|open GGUF file '?)\s*'?([^'\s()]+\.gguf)")
_SPLIT_OLD = re.compile(r"failed to load split (\d+) of (\d+)")
_ALLOCATE = re.compile(r"attempted to allocate ([\d.]+) MB|failed to allocate \w+ buffer of size (\d+)")
_CORRUPT = (
    "not within the file bounds",
    "corrupted or incomplete",
    "failed to read header",
    "invalid magic",
    "failed to read tensor",
    "tensor data is not",
)
_OOM = ("out of memory", "insufficient memory", "failed to allocate", "cannot allocate", "bad_alloc")  # mmap: ENOMEM
_CONFIG = ("invalid argument", "error while handling argument", "unknown argument")
_LOAD_ERROR = re.compile(r"error loading model: (.+)$")


def classify_failure(log_tail: list[str], model: str) -> Failure:
    """The cause of a failed start, from the engine's last log lines, and the next step for it."""
    text = "\n".join(log_tail)
    lower = text.lower()
    log_step = f"see the whole engine log with: kamiwaza logs {model}"
    if m := _ARCHITECTURE.search(text):
        return Failure(
            "MODEL_LOADING_FAILURE",
            f"this llama.cpp does not support the model architecture '{m[1]}'",
            f"use a GGUF of an architecture llama.cpp supports (kamiwaza show {model} gives this one's), "
            "or point KAMIWAZA_LLAMA_SERVER at a newer llama-server",
        )
    if m := _SPLIT.search(text):
        return Failure(
            "MODEL_LOADING_FAILURE",
            f"a part of the split model is missing: {Path(m[1]).name}",
            f"pull the model again to fetch every part: kamiwaza rm {model}, then kamiwaza pull it",
        )
    if m := _SPLIT_OLD.search(text):
        return Failure(
            "MODEL_LOADING_FAILURE",
            f"part {m[1]} of the {m[2]} parts of the split model could not be loaded",
            f"pull the model again to fetch every part: kamiwaza rm {model}, then kamiwaza pull it",
        )
    if any(marker in lower for marker in _CORRUPT):
        return Failure(
            "MODEL_LOADING_FAILURE",
            f"the model file is corrupt or incomplete ({_quote(log_tail, _CORRUPT)})",
            f"remove it and download it again: kamiwaza rm {model}, then kamiwaza pull it",
        )
    if "cuda error" in lower and "out of memory" not in lower or "cudamalloc" in lower:
        return Failure("CUDA_ERROR", f"the GPU failed: {_quote(log_tail, ('cuda',))}", "run on the CPU: --cpu")
    if any(marker in lower for marker in _OOM):
        what = "its buffers"
        if m := _ALLOCATE.search(text):
            what = f"{float(m[1]):.0f} MiB" if m[1] else f"{int(m[2]) // memory.MIB} MiB"
        elif "mmap failed" in lower:
            what = "the model's weights (mmap)"
        return Failure(
            "OOM",
            f"the engine ran out of memory: it could not allocate {what}",
            "use a smaller context (--ctx 2048) or fewer slots (--parallel 1), or stop another "
            "deployment (kamiwaza ps, then kamiwaza stop NAME)",
        )
    if any(marker in lower for marker in _CONFIG):
        return Failure("INVALID_CONFIG", f"the engine refused its settings: {_quote(log_tail, _CONFIG)}", log_step)
    for line in reversed(log_tail):
        if m := _LOAD_ERROR.search(line):
            return Failure("MODEL_LOADING_FAILURE", f"llama.cpp could not load the model: {m[1].strip()}", log_step)
    if "failed to load model" in lower or "model loading error" in lower or "gguf_init" in lower:
        return Failure("MODEL_LOADING_FAILURE", "llama.cpp could not load the model", log_step)
    last = next((ln for ln in reversed(log_tail) if ln.strip()), "")
    return Failure(
        "CONTAINER_EXITED", f"the engine stopped: {_strip(last)}" if last else "the engine stopped", log_step
    )


def _strip(line: str) -> str:
    """A log line without llama.cpp's timestamp and level prefix (``0.00.006.7 E ``)."""
    return re.sub(r"^\s*\d+\.\d+\.\d+\.\d+\s+[A-Z]\s+", "", line).strip()


def _quote(log_tail: list[str], markers: tuple[str, ...]) -> str:
    """The first log line with one of ``markers``, without its prefix, for the cause line."""
    for line in log_tail:
        if any(marker in line.lower() for marker in markers):
            return _strip(line)
    return ""
