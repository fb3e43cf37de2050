"""Reading GGUF file headers: metadata, tensor layout and the size the file must have.

This module owns everything the CLI knows about the GGUF format: the magic
check used to sniff downloads, the parser of the key/value metadata and tensor
infos, the ggml tensor type block sizes, and the mapping of ``general.file_type``
to llama.cpp's quantization labels. Tensor data is never read: a header of a
multi-gigabyte model is parsed in a fraction of a second with bounded memory,
and every length and count in the header is capped so a hostile file cannot
make the reader allocate or loop without bound.
"""

from __future__ import annotations

import io
import os
import re
import struct
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGML_TYPE_SIZES",
    "GGUFError",
    "GGUFInfo",
    "MAX_COUNT",
    "MAX_STRING_BYTES",
    "is_gguf_prefix",
    "looks_instruction_tuned",
    "quantization_label",
    "read_gguf",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Real headers stay far below these (the biggest strings are chat templates and
# tokenizer JSON, the biggest counts are vocabularies of a few 100k tokens).
MAX_STRING_BYTES = 16 * 1024 * 1024
MAX_COUNT = 10_000_000
# ggml's GGML_MAX_DIMS; llama.cpp refuses files with more.
MAX_DIMS = 4
# Arrays of arrays are legal but never deep in practice; the cap keeps a
# crafted file from exhausting the Python stack.
MAX_NESTING = 8
# Longer arrays (vocabularies, merges, scores) are skipped and summarised.
MAX_ARRAY_ITEMS_KEPT = 64
# Per-field caps alone would still let millions of small keys pile up, so what
# the returned metadata holds is budgeted too: string bytes plus a rough
# Python object cost per value. Real headers keep well under 1 MiB.
MAX_KEPT_BYTES = 64 * 1024 * 1024
_VALUE_COST = 64

_CHUNK = 1 << 20
_INT64_LIMIT = 1 << 63

_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# magic, uint32 version, uint64 tensor count, uint64 metadata count
_HEADER_SIZE = 4 + 4 + 8 + 8

_SCALARS: dict[int, struct.Struct] = {
    _UINT8: struct.Struct("<B"),
    _INT8: struct.Struct("<b"),
    _UINT16: struct.Struct("<H"),
    _INT16: struct.Struct("<h"),
    _UINT32: _U32,
    _INT32: struct.Struct("<i"),
    _FLOAT32: struct.Struct("<f"),
    _BOOL: struct.Struct("<B"),
    _UINT64: _U64,
    _INT64: struct.Struct("<q"),
    _FLOAT64: struct.Struct("<d"),
}

_QK_K = 256

# ggml_type id -> (elements per block, bytes per block), as in ggml's type
# traits and gguf-py's GGML_QUANT_SIZES.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 2 + 16),  # Q4_0
    3: (32, 2 + 2 + 16),  # Q4_1
    6: (32, 2 + 4 + 16),  # Q5_0
    7: (32, 2 + 2 + 4 + 16),  # Q5_1
    8: (32, 2 + 32),  # Q8_0
    # gguf-py says 40 (from when d and s were floats); ggml asserts 36 today.
    9: (32, 2 + 2 + 32),  # Q8_1
    10: (_QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),  # Q2_K
    11: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),  # Q3_K
    12: (_QK_K, 2 + 2 + _QK_K // 2 + 12),  # Q4_K
    13: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),  # Q5_K
    14: (_QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),  # Q6_K
    15: (_QK_K, 4 + _QK_K + _QK_K // 8),  # Q8_K
    16: (_QK_K, 2 + _QK_K // 4),  # IQ2_XXS
    17: (_QK_K, 2 + _QK_K // 4 + _QK_K // 32),  # IQ2_XS
    18: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8),  # IQ3_XXS
    19: (_QK_K, 2 + _QK_K // 8 + _QK_K // 16),  # IQ1_S
    20: (32, 2 + 16),  # IQ4_NL
    21: (_QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),  # IQ3_S
    22: (_QK_K, 2 + _QK_K // 4 + _QK_K // 16),  # IQ2_S
    23: (_QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (_QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),  # IQ1_M
    30: (1, 2),  # BF16
    # 31-33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) were dropped from ggml in favour of
    # repacking at load time, but files written in late 2024 still carry them;
    # they are interleaved Q4_0 blocks, so the size is Q4_0's.
    31: (32, 2 + 16),
    32: (32, 2 + 16),
    33: (32, 2 + 16),
    34: (_QK_K, 2 + 4 * 13),  # TQ1_0
    35: (_QK_K, 2 + 64),  # TQ2_0
    39: (32, 1 + 16),  # MXFP4
    40: (64, 4 + 32),  # NVFP4
    41: (128, 2 + 16),  # Q1_0
}

# llama.cpp's llama_ftype (the value of general.file_type) -> the label that
# llama.cpp and Hugging Face file names use.
_FILE_TYPE_LABELS: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
# llama.cpp ORs this into the file type when it inferred it from tensor types.
_FILE_TYPE_GUESSED = 1024


class GGUFError(ValueError):
    """Not a GGUF file, or truncated/corrupt; message is one line suitable for users."""


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says about a model, plus the file size it implies."""

    version: int
    tensor_count: int
    # Arrays longer than MAX_ARRAY_ITEMS_KEPT become {"type": "array", "length": N}.
    metadata: dict[str, object]
    data_offset: int
    # data_offset + the end of the furthest tensor; data_offset alone when a
    # tensor type is unknown, so the size cannot be computed.
    expected_size: int
    architecture: str | None
    name: str | None
    context_length: int | None
    parameter_count: int | None
    file_type: int | None
    quantization: str | None
    has_chat_template: bool
    chat_template: str | None
    # Bytes of tensor data per ggml type id (what the weights take once loaded); a tensor of a
    # type this module does not know is left out, and then tensor_bytes is None.
    tensor_bytes_by_type: dict[int, int] = field(default_factory=dict)
    tensor_bytes: int | None = None


def is_gguf_prefix(first_bytes: bytes) -> bool:
    """True if ``first_bytes`` starts with the GGUF magic (cheap sniffing of downloads)."""
    return first_bytes[:4] == GGUF_MAGIC


# Words that GGUF converters (llama.cpp's convert_hf_to_gguf, from the repo's name and card) put
# in general.finetune, general.name, general.basename or general.tags of a tuned model:
# "Qwen2.5 0.5B Instruct", finetune "it" (gemma), "chat", "sft", "dpo", "rlhf".
_INSTRUCT_WORDS = frozenset(
    {"instruct", "instruction", "it", "chat", "sft", "dpo", "rlhf", "assistant", "conversational"}
)
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def looks_instruction_tuned(metadata: dict[str, object]) -> bool:
    """Whether the header marks the model as instruction- or chat-tuned (a base model's does not).

    Without a chat template, this decides between chat framing and plain text completion: a
    base model framed as a chat loops or answers nothing, while as text it continues sensibly.
    """
    texts: list[str] = []
    for key in ("general.finetune", "general.name", "general.basename", "general.tags"):
        value = metadata.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(v for v in value if isinstance(v, str))
    words = {w for text in texts for w in _WORD_SPLIT.split(text.lower()) if w}
    return bool(words & _INSTRUCT_WORDS)


def quantization_label(file_type: int) -> str | None:
    """llama.cpp's label for a ``general.file_type`` value (15 -> "Q4_K_M"), None if unknown."""
    guessed = bool(file_type & _FILE_TYPE_GUESSED)
    label = _FILE_TYPE_LABELS.get(file_type & ~_FILE_TYPE_GUESSED)
    if label is None:
        return None
    return f"{label} (guessed)" if guessed else label


class _Reader:
    """Sequential little-endian reads over a file, buffered in 1 MiB chunks.

    The parser asks for a handful of bytes at a time (hundreds of thousands of
    times for a vocabulary); slicing our own buffer with ``unpack_from`` is far
    cheaper than a ``read`` call per field.
    """

    def __init__(self, file: io.FileIO, display: str, size: int) -> None:
        self._file = file
        self._display = display
        self._size = size
        self._buf = b""
        self._pos = 0
        self._base = 0
        self._kept = 0

    def keep(self, nbytes: int) -> None:
        self._kept += nbytes + _VALUE_COST
        if self._kept > MAX_KEPT_BYTES:
            raise self.corrupt(f"metadata exceeds the limit of {MAX_KEPT_BYTES // (1024 * 1024)} MiB")

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def corrupt(self, why: str) -> GGUFError:
        return GGUFError(f"{self._display} is corrupt: {why}")

    def truncated(self, needed: int) -> GGUFError:
        return GGUFError(f"{self._display} is truncated: {self._size} bytes, expected at least {needed}")

    def _fill(self, n: int) -> None:
        avail = len(self._buf) - self._pos
        if avail >= n:
            return
        end = self.offset + n
        if end > self._size:
            raise self.truncated(end)
        parts = [self._buf[self._pos :]]
        missing = n - avail
        want = max(missing, _CHUNK)
        while missing > 0:
            got = self._file.read(want)
            if not got:
                # The file shrank after we measured it.
                raise self.truncated(end)
            parts.append(got)
            missing -= len(got)
            want -= len(got)
        self._base += self._pos
        self._pos = 0
        self._buf = b"".join(parts)

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes at the current position, without consuming them."""
        self._fill(min(n, self._size - self.offset))
        return self._buf[self._pos : self._pos + n]

    def unpack(self, fmt: struct.Struct) -> tuple[int | float, ...]:
        self._fill(fmt.size)
        values = fmt.unpack_from(self._buf, self._pos)
        self._pos += fmt.size
        return values

    def u32(self) -> int:
        self._fill(4)
        (value,) = _U32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return int(value)

    def u64(self) -> int:
        self._fill(8)
        (value,) = _U64.unpack_from(self._buf, self._pos)
        self._pos += 8
        return int(value)

    def count(self, what: str) -> int:
        n = self.u64()
        if n > MAX_COUNT:
            raise self.corrupt(f"{what} count {n} exceeds the limit of {MAX_COUNT}")
        return n

    def _string_length(self) -> int:
        n = self.u64()
        if n > MAX_STRING_BYTES:
            raise self.corrupt(f"string of {n} bytes at offset {self.offset - 8} exceeds the 16 MiB limit")
        return n

    def string(self) -> str:
        n = self._string_length()
        self._fill(n)
        raw = self._buf[self._pos : self._pos + n]
        self._pos += n
        # Metadata is informational; a stray invalid byte should not make the
        # whole file unreadable.
        return raw.decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if len(self._buf) - self._pos >= n:
            self._pos += n
            return
        end = self.offset + n
        if end > self._size:
            raise self.truncated(end)
        self._file.seek(end)
        self._buf = b""
        self._base = end
        self._pos = 0

    def skip_strings(self, count: int) -> None:
        # Hot loop: a vocabulary is a few hundred thousand strings, so the
        # buffer and position are kept in locals between refills.
        buf, pos = self._buf, self._pos
        for _ in range(count):
            if len(buf) - pos < 8:
                self._pos = pos
                self._fill(8)
                buf, pos = self._buf, self._pos
            (n,) = _U64.unpack_from(buf, pos)
            pos += 8
            if n > MAX_STRING_BYTES:
                self._pos = pos
                raise self.corrupt(f"string of {n} bytes at offset {self.offset - 8} exceeds the 16 MiB limit")
            if len(buf) - pos >= n:
                pos += n
            else:
                self._pos = pos
                self.skip(n)
                buf, pos = self._buf, self._pos
        self._pos = pos


def _read_value(r: _Reader, vtype: int, depth: int) -> object:
    if vtype == _STRING:
        text = r.string()
        r.keep(len(text))
        return text
    fmt = _SCALARS.get(vtype)
    if fmt is not None:
        r.keep(0)
        (value,) = r.unpack(fmt)
        return value != 0 if vtype == _BOOL else value
    if vtype == _ARRAY:
        if depth >= MAX_NESTING:
            raise r.corrupt(f"arrays nested deeper than {MAX_NESTING} levels")
        elem_type = r.u32()
        _check_value_type(r, elem_type)
        n = r.count("array element")
        if n > MAX_ARRAY_ITEMS_KEPT:
            _skip_elements(r, elem_type, n, depth + 1)
            return {"type": "array", "length": n}
        return [_read_value(r, elem_type, depth + 1) for _ in range(n)]
    raise r.corrupt(f"unknown metadata value type {vtype} at offset {r.offset - 4}")


def _check_value_type(r: _Reader, vtype: int) -> None:
    if vtype not in _SCALARS and vtype not in (_STRING, _ARRAY):
        raise r.corrupt(f"unknown metadata value type {vtype} at offset {r.offset - 4}")


def _skip_elements(r: _Reader, elem_type: int, n: int, depth: int) -> None:
    fmt = _SCALARS.get(elem_type)
    if fmt is not None:
        r.skip(fmt.size * n)
    elif elem_type == _STRING:
        r.skip_strings(n)
    else:
        for _ in range(n):
            _read_value(r, elem_type, depth)


def _as_int(value: object) -> int | None:
    # bool is an int subclass, but a BOOL-typed value is not a count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse the header of the GGUF file at ``path`` without reading tensor data.

    Raises GGUFError when the file is not GGUF, is corrupt, or is shorter than
    its header says; OSError (missing file, permissions) propagates unchanged.
    """
    display = os.fspath(path)
    # Unbuffered: _Reader does its own chunking, and seeks past skipped arrays.
    with open(path, "rb", buffering=0) as file:
        size = os.fstat(file.fileno()).st_size
        return _parse(_Reader(file, display, size), display, size)


def _parse(r: _Reader, display: str, size: int) -> GGUFInfo:
    head = r.peek(4)
    if not is_gguf_prefix(head):
        if head and GGUF_MAGIC.startswith(head):
            raise r.truncated(_HEADER_SIZE)
        raise GGUFError(f"{display} is not a GGUF file (bad magic)")
    if size < _HEADER_SIZE:
        raise r.truncated(_HEADER_SIZE)
    r.skip(4)
    version = r.u32()
    tensor_count = r.u64()
    kv_count = r.u64()
    if version not in SUPPORTED_VERSIONS:
        if int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
            raise GGUFError(f"{display} is a big-endian GGUF file, which is not supported")
        raise GGUFError(f"{display} has unsupported GGUF version {version} (supported: 2, 3)")
    if tensor_count > MAX_COUNT:
        raise r.corrupt(f"tensor count {tensor_count} exceeds the limit of {MAX_COUNT}")
    if kv_count > MAX_COUNT:
        raise r.corrupt(f"metadata count {kv_count} exceeds the limit of {MAX_COUNT}")

    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = r.string()
        r.keep(len(key))
        vtype = r.u32()
        _check_value_type(r, vtype)
        if key in metadata:
            raise r.corrupt(f"duplicate metadata key {key!r}")
        metadata[key] = _read_value(r, vtype, 0)

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        value = _as_int(metadata["general.alignment"])
        if value is None or value <= 0 or value & (value - 1):
            raise r.corrupt(f"general.alignment {metadata['general.alignment']!r} is not a power of two")
        alignment = value

    parameter_count = 0
    data_end = 0
    sizes_known = True
    bytes_by_type: dict[int, int] = {}
    for _ in range(tensor_count):
        tensor_name = r.string()
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise r.corrupt(f"tensor {tensor_name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        dims = [r.u64() for _ in range(n_dims)]
        ggml_type = r.u32()
        offset = r.u64()
        n_elements = 1
        for dim in dims:
            n_elements *= dim
            if n_elements >= _INT64_LIMIT:
                raise r.corrupt(f"tensor {tensor_name!r} has too many elements")
        if offset % alignment:
            raise r.corrupt(f"tensor {tensor_name!r} data offset {offset} is not aligned to {alignment}")
        parameter_count += n_elements
        block = GGML_TYPE_SIZES.get(ggml_type)
        if block is None:
            sizes_known = False
            continue
        block_elements, block_bytes = block
        if dims and dims[0] % block_elements:
            raise r.corrupt(
                f"tensor {tensor_name!r} row of {dims[0]} elements is not a multiple of "
                f"the block size {block_elements} of ggml type {ggml_type}"
            )
        nbytes = n_elements // block_elements * block_bytes
        bytes_by_type[ggml_type] = bytes_by_type.get(ggml_type, 0) + nbytes
        data_end = max(data_end, offset + nbytes)

    header_end = r.offset
    data_offset = -(-header_end // alignment) * alignment
    if tensor_count == 0:
        # Nothing follows the header, and writers need not pad it.
        expected_size = header_end
    elif sizes_known:
        expected_size = data_offset + data_end
    else:
        expected_size = data_offset
    if size < expected_size:
        raise r.truncated(expected_size)

    architecture = metadata.get("general.architecture")
    architecture = architecture if isinstance(architecture, str) else None
    model_name = metadata.get("general.name")
    context_length = _as_int(metadata.get(f"{architecture}.context_length")) if architecture else None
    file_type = _as_int(metadata.get("general.file_type"))
    template = metadata.get("tokenizer.chat_template")
    chat_template = template if isinstance(template, str) else None
    return GGUFInfo(
        version=version,
        tensor_count=tensor_count,
        metadata=metadata,
        data_offset=data_offset,
        expected_size=expected_size,
        architecture=architecture,
        name=model_name if isinstance(model_name, str) else None,
        context_length=context_length,
        parameter_count=parameter_count,
        file_type=file_type,
        quantization=quantization_label(file_type) if file_type is not None else None,
        has_chat_template=bool(chat_template),
        chat_template=chat_template,
        tensor_bytes_by_type=bytes_by_type,
        tensor_bytes=sum(bytes_by_type.values()) if sizes_known else None,
    )
