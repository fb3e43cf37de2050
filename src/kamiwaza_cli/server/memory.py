"""How much memory a llama.cpp deployment of a GGUF model takes: weights, KV cache, the engine's
prompt cache and its compute buffers, from the GGUF header and the deployment's slots and context.

This module owns the estimate (``estimate``) and its parts; the deploy memory check
(supervisor.py) and the platform's estimate routes (``POST /serving/estimate_model_vram`` and both
``memory_usage`` routes, through routes/planning.py) use it, so they all give the same number, and
the llama.cpp engine sizes its prompt cache with it. ``weights_by_type`` breaks the weights down by
ggml type for the estimate route. Nothing here starts a process or reads tensor data.

- Weights: the bytes of every tensor by its ggml type, as the GGUF's tensor infos give them
  (what llama.cpp's "model buffer size" reports), summed over the split files of a split model
  and the vision projector; the file size when the header cannot be read (an upper bound).
- KV cache: K and V of every layer for every context cell of every slot, in f16 (llama.cpp's
  default cache type): ``2 x n_ctx_total x sum over layers of head_count_kv(layer) x
  (key_length + value_length) / 2``, from ``{arch}.block_count``, ``{arch}.attention.head_count_kv``
  (one number or one per layer), ``{arch}.attention.key_length`` / ``value_length`` (else
  ``embedding_length / head_count``). Sliding-window layers are counted as full layers: an upper
  bound (gemma 3 keeps 5 of every 6 layers to a 512-token window and really needs ~40% of it).
- Prompt cache: llama-server keeps prompts of idle slots in host memory up to ``--cache-ram``
  (8 GiB by default, which would let one engine grow far past any check); the engine is started
  with that limit set to the KV cache size, and that is what is counted.
- Compute: an allowance, documented at ``COMPUTE_BASE`` and ``compute_bytes``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..gguf import GGUFError, GGUFInfo, read_gguf

MIB = 1 << 20
GIB = 1 << 30
KV_BYTES_PER_ELEMENT = 2  # f16, llama.cpp's default --cache-type-k/-v
# llama.cpp rounds each slot's KV cache up to a multiple of 256 cells.
KV_CELL_PADDING = 256
# llama-server's default micro-batch (--ubatch-size): the compute graph is sized for this many tokens.
UBATCH = 512
# The engine process itself beyond its buffers: the vocabulary and tokenizer, thread pools, the
# HTTP server. Measured at ~30 MiB for the small gemma (262k-token vocabulary) on llama.cpp's CPU
# build; 64 MiB leaves room for larger vocabularies and allocator slack.
COMPUTE_BASE = 64 * MIB
F32 = 4
# A split model's files, as llama.cpp names them: name-00001-of-00003.gguf.
_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class MemoryEstimate:
    """What one deployment takes, in bytes, and the slots and context it was computed for."""

    weights: int
    kv_cache: int
    prompt_cache: int
    compute: int
    slots: int
    context_per_slot: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.prompt_cache + self.compute

    @property
    def without_weights(self) -> int:
        """What a second engine of the same file adds: its weights are mapped from the same pages."""
        return self.total - self.weights

    def describe(self, *, weights: bool = True) -> str:
        """The parts, for one line of text: ``weights 236 MiB + KV cache 288 MiB (4 slots x 4096
        tokens) + ...``; without the weights when another engine maps them already."""
        parts = [f"weights {human(self.weights)}"] if weights else []
        parts += [
            f"KV cache {human(self.kv_cache)} ({self.slots} slot{'s' if self.slots != 1 else ''} "
            f"x {self.context_per_slot} tokens)",
            f"prompt cache {human(self.prompt_cache)}",
            f"compute {human(self.compute)}",
        ]
        return " + ".join(parts)


def human(nbytes: int) -> str:
    """1.50 GiB, 235 MiB: precise enough to act on, short enough for one error line."""
    if abs(nbytes) >= GIB:
        return f"{nbytes / GIB:.2f} GiB"
    return f"{math.ceil(nbytes / MIB)} MiB"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _meta(info: GGUFInfo, key: str) -> object:
    return info.metadata.get(f"{info.architecture}.{key}")


def vocabulary_size(info: GGUFInfo) -> int:
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, dict):  # a long array, summarised by the reader
        return _int(tokens.get("length")) or 0
    return len(tokens) if isinstance(tokens, list) else 0


def kv_heads_per_layer(info: GGUFInfo) -> list[int]:
    """``head_count_kv`` of each layer (0 for a layer without attention, as in hybrid models)."""
    layers = _int(_meta(info, "block_count")) or 0
    heads = _int(_meta(info, "attention.head_count"))
    kv = _meta(info, "attention.head_count_kv")
    if isinstance(kv, list):
        values = [_int(v) or 0 for v in kv]
        if len(values) == layers:
            return values
        return [max(values, default=0)] * layers
    if isinstance(kv, dict):
        # More than 64 layers: the reader kept only the array's length. A layer never has more
        # KV heads than query heads, so the query head count is an upper bound.
        return [heads or 0] * layers
    if _int(kv) is not None:
        return [_int(kv) or 0] * layers
    return [heads or 0] * layers  # no head_count_kv: every head has its own K and V


def head_dims(info: GGUFInfo) -> tuple[int, int]:
    """(key length, value length) of one head."""
    embedding = _int(_meta(info, "embedding_length")) or 0
    heads = _int(_meta(info, "attention.head_count")) or 0
    default = embedding // heads if heads else 0
    key = _int(_meta(info, "attention.key_length")) or default
    value = _int(_meta(info, "attention.value_length")) or key or default
    return key, value


def padded_context(context_per_slot: int) -> int:
    return -(-max(context_per_slot, 1) // KV_CELL_PADDING) * KV_CELL_PADDING


def kv_cache_bytes(info: GGUFInfo | None, *, slots: int, context_per_slot: int) -> int:
    """K and V for ``slots`` x ``context_per_slot`` cells in every layer (sliding windows counted in full)."""
    if info is None or not info.architecture:
        return 0
    key, value = head_dims(info)
    cells = slots * padded_context(context_per_slot)
    return sum(heads * (key + value) for heads in kv_heads_per_layer(info)) * cells * KV_BYTES_PER_ELEMENT


def compute_bytes(info: GGUFInfo | None, *, slots: int, context_per_slot: int) -> int:
    """The compute allowance: ``COMPUTE_BASE``, the logits of one token per slot (f32 x vocabulary),
    and the largest activations of one micro-batch of ``UBATCH`` tokens: the attention scores of
    every head against a full slot (f32; what llama.cpp needs when flash attention is off) and the
    feed-forward's three intermediate tensors. An upper bound for llama.cpp's CPU "compute buffer"
    (the small gemma at 4 x 4096 reports 23 MiB; this gives 58 MiB plus the base)."""
    if info is None or not info.architecture:
        return COMPUTE_BASE
    heads = _int(_meta(info, "attention.head_count")) or 0
    feed_forward = _meta(info, "feed_forward_length")
    ff = max((_int(v) or 0 for v in feed_forward), default=0) if isinstance(feed_forward, list) else _int(feed_forward)
    embedding = _int(_meta(info, "embedding_length")) or 0
    logits = slots * vocabulary_size(info) * F32
    attention = UBATCH * padded_context(context_per_slot) * heads * F32
    activations = UBATCH * (3 * (ff or 4 * embedding) + 8 * embedding) * F32
    return COMPUTE_BASE + logits + attention + activations


def prompt_cache_bytes(kv_cache: int) -> int:
    """The engine's ``--cache-ram`` limit: as much as its KV cache, in whole MiB."""
    return math.ceil(kv_cache / MIB) * MIB


def split_files(model_file: Path, info: GGUFInfo | None) -> list[Path]:
    """Every file of a split model (llama.cpp loads them from beside the first); just the file otherwise."""
    count = _int(info.metadata.get("split.count")) if info is not None else None
    match = _SPLIT.match(model_file.name)
    if not count or count <= 1 or match is None:
        return [model_file]
    return [model_file.with_name(f"{match['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def file_weights(path: Path, info: GGUFInfo | None = None) -> int:
    """The tensor bytes of one GGUF file; its size when the header cannot say (never less than the data)."""
    if info is None:
        try:
            info = read_gguf(path)
        except (GGUFError, OSError):
            info = None
    if info is not None and info.tensor_bytes is not None:
        return info.tensor_bytes
    try:
        return path.stat().st_size
    except OSError:
        return 0


def estimate(
    model_file: Path,
    *,
    slots: int,
    context_per_slot: int,
    projector: Path | None = None,
    info: GGUFInfo | None = None,
) -> MemoryEstimate:
    """The memory of a llama.cpp engine serving ``model_file`` with ``slots`` x ``context_per_slot``.

    ``info`` is the file's header when the caller read it already. A file that is not a readable
    GGUF is counted at its size with no KV cache (llama.cpp will refuse it at start anyway)."""
    if info is None:
        try:
            info = read_gguf(model_file)
        except (GGUFError, OSError):
            info = None
    weights = 0
    for part in split_files(model_file, info):
        weights += file_weights(part, info if part == model_file else None)
    if projector is not None:
        weights += file_weights(projector)
    kv = kv_cache_bytes(info, slots=slots, context_per_slot=context_per_slot)
    return MemoryEstimate(
        weights=weights,
        kv_cache=kv,
        prompt_cache=prompt_cache_bytes(kv),
        compute=compute_bytes(info, slots=slots, context_per_slot=context_per_slot),
        slots=slots,
        context_per_slot=context_per_slot,
    )


# ggml type ids as llama.cpp names them (gguf.GGML_TYPE_SIZES has their block sizes).
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
}  # fmt: skip


def weights_by_type(model_file: Path) -> dict[str, int]:
    """The tensor bytes of a GGUF file by ggml type (``{"Q4_K": ..., "F32": ...}``); empty when the
    header cannot be read."""
    try:
        info = read_gguf(model_file)
    except (GGUFError, OSError):
        return {}
    return {GGML_TYPE_NAMES.get(t, f"type_{t}"): n for t, n in sorted(info.tensor_bytes_by_type.items())}
