"""Writing tiny, valid (or deliberately broken) GGUF files for tests.

Tests need GGUF files that are a few hundred bytes, not the 253 MB model, and
tests of the reader's defences need headers with hand-picked bad fields; the
low-level encoders here serve both.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL = range(8)
STRING, ARRAY, UINT64, INT64, FLOAT64 = range(8, 13)
GGML_F32 = 0
ALIGNMENT = 32

_SCALAR_FORMATS: dict[int, str] = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}

# A value with an explicit GGUF type, for when the Python type is ambiguous
# (an int could be any of eight integer types).
Typed = tuple[int, object]


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def header(tensor_count: int, kv_count: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


def infer_type(value: object) -> int:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return UINT32 if 0 <= value < 2**32 else INT64
    if isinstance(value, float):
        return FLOAT32
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    raise TypeError(f"no GGUF type for {type(value).__name__}")


def encode_value(vtype: int, value: object) -> bytes:
    """The payload of a value of type ``vtype`` (without the type tag)."""
    if vtype == STRING:
        assert isinstance(value, (str, bytes))
        return gguf_string(value)
    if vtype == ARRAY:
        assert isinstance(value, list)
        elem_type = infer_type(value[0]) if value else UINT8
        body = b"".join(encode_value(elem_type, item) for item in value)
        return struct.pack("<IQ", elem_type, len(value)) + body
    return struct.pack(_SCALAR_FORMATS[vtype], value)


def kv(key: str, value: object | Typed) -> bytes:
    """One metadata pair; ``value`` may be a (type, value) tuple to force the type."""
    if isinstance(value, tuple):
        vtype, payload = value
    else:
        vtype, payload = infer_type(value), value
    return gguf_string(key) + struct.pack("<I", vtype) + encode_value(vtype, payload)


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return (
        gguf_string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def pad(blob: bytes, alignment: int = ALIGNMENT) -> bytes:
    return blob + b"\0" * (-len(blob) % alignment)


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    arch: str = "llama",
    name: str = "tiny",
    chat_template: str | None = None,
    n_floats: int = 64,
    extra_metadata: Mapping[str, object | Typed] | None = None,
) -> Path:
    """Write a valid GGUF v3 file with one F32 tensor of ``n_floats`` elements."""
    metadata: dict[str, object | Typed] = {
        "general.architecture": arch,
        "general.name": name,
        f"{arch}.context_length": 2048,
        "general.file_type": 0,
    }
    if chat_template is not None:
        metadata["tokenizer.chat_template"] = chat_template
    metadata.update(extra_metadata or {})
    blob = header(1, len(metadata)) + b"".join(kv(k, v) for k, v in metadata.items())
    blob += tensor_info("weight", [n_floats], GGML_F32, 0)
    alignment = metadata.get("general.alignment", ALIGNMENT)
    if isinstance(alignment, tuple):
        alignment = alignment[1]
    assert isinstance(alignment, int)
    blob = pad(blob, alignment) + struct.pack(f"<{n_floats}f", *(float(i) for i in range(n_floats)))
    target = Path(path)
    target.write_bytes(blob)
    return target
