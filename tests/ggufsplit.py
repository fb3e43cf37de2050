"""Split a GGUF model into llama.cpp split files, as ``llama-gguf-split --split`` does.

llama.cpp's own tool is not built here, so the layout is written from the GGUF format: each part is
a complete GGUF file holding some of the tensors; the first keeps every metadata key of the model,
the others only the split keys; every part carries ``split.no`` (uint16, 0-based), ``split.count``
(uint16) and ``split.tensors.count`` (int32, tensors in all parts), and is named
``PREFIX-0000N-of-0000M.gguf``, the name llama.cpp derives the other parts' names from. Tensor data
offsets are relative to each part's own data section, aligned to ``general.alignment`` (32).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from ggufgen import INT32, UINT16, gguf_string, header

_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
ALIGNMENT = 32


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def string(self) -> bytes:
        (n,) = self.unpack("<Q")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALARS:
            self.pos += _SCALARS[vtype]
        elif vtype == _STRING:
            self.string()
        elif vtype == _ARRAY:
            elem, count = self.unpack("<IQ")
            if elem in _SCALARS:
                self.pos += _SCALARS[elem] * count
            else:
                for _ in range(count):
                    self.skip_value(elem)
        else:
            raise ValueError(f"unknown GGUF value type {vtype}")


def _kv(key: str, vtype: int, fmt: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<I", vtype) + struct.pack(fmt, value)


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def split_gguf(source: Path, prefix: Path, count: int) -> list[Path]:
    """Write ``count`` split files ``{prefix}-0000N-of-0000M.gguf`` from ``source``; their paths."""
    with source.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        c = _Cursor(buf)
        assert bytes(buf[:4]) == b"GGUF"
        c.pos = 4
        _version, n_tensors, n_kv = c.unpack("<IQQ")
        kv_start = c.pos
        for _ in range(n_kv):
            key = c.string()
            assert not key.startswith(b"split."), "already a split file"
            (vtype,) = c.unpack("<I")
            c.skip_value(vtype)
        metadata = bytes(buf[kv_start : c.pos])
        tensors = []  # (name, n_dims, dims, type, offset)
        for _ in range(n_tensors):
            name = c.string()
            (n_dims,) = c.unpack("<I")
            dims = c.unpack(f"<{n_dims}Q")
            ttype, offset = c.unpack("<IQ")
            tensors.append((name, n_dims, dims, ttype, offset))
        data_start = _align(c.pos)
        ends = sorted(t[4] for t in tensors)[1:] + [len(buf) - data_start]
        end_of = dict(zip(sorted(t[4] for t in tensors), ends, strict=True))

        per_part = -(-n_tensors // count)
        paths = []
        for index in range(count):
            group = tensors[index * per_part : (index + 1) * per_part]
            split_keys = (
                _kv("split.no", UINT16, "<H", index)
                + _kv("split.count", UINT16, "<H", count)
                + _kv("split.tensors.count", INT32, "<i", n_tensors)
            )
            kvs = (metadata if index == 0 else b"") + split_keys
            n_kvs = (n_kv if index == 0 else 0) + 3
            infos = b""
            offset = 0
            layout = []
            for name, n_dims, dims, ttype, old in group:
                size = end_of[old] - old
                offset = _align(offset)
                info = struct.pack(f"<I{n_dims}QIQ", n_dims, *dims, ttype, offset)
                infos += struct.pack("<Q", len(name)) + name + info
                layout.append((offset, old, size))
                offset += size
            head = header(len(group), n_kvs) + kvs + infos
            path = Path(f"{prefix}-{index + 1:05d}-of-{count:05d}.gguf")
            with path.open("wb") as out:
                out.write(head + b"\0" * (_align(len(head)) - len(head)))
                base = out.tell()
                for new, old, size in layout:
                    out.write(b"\0" * (base + new - out.tell()))
                    out.write(buf[data_start + old : data_start + old + size])
            paths.append(path)
        return paths
