"""Tests of the GGUF header reader against a real model, generated files and hostile headers."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from ggufgen import (
    ARRAY,
    FLOAT32,
    FLOAT64,
    INT8,
    INT16,
    INT64,
    STRING,
    UINT8,
    UINT16,
    UINT64,
    gguf_string,
    header,
    kv,
    pad,
    tensor_info,
    write_tiny_gguf,
)

from kamiwaza_cli import gguf
from kamiwaza_cli.gguf import (
    GGML_TYPE_SIZES,
    GGUFError,
    GGUFInfo,
    is_gguf_prefix,
    quantization_label,
    read_gguf,
)

GEMMA_SIZE = 253_113_024


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> GGUFInfo:
    return read_gguf(gemma_path)


# --- the real model -------------------------------------------------------------


def test_real_model_identity(gemma: GGUFInfo) -> None:
    assert gemma.version == 3
    assert gemma.architecture == "gemma3"
    assert gemma.name == "Gemma 3 270m"
    assert gemma.context_length == 32768
    assert gemma.metadata["gemma3.context_length"] == 32768


def test_real_model_size_and_quantization(gemma: GGUFInfo, gemma_path: Path) -> None:
    assert gemma.parameter_count == 268_098_176
    assert gemma.file_type == 15
    assert gemma.quantization == "Q4_K_M"
    assert gemma.tensor_count == 236
    # The tensor table accounts for every byte of the file.
    assert gemma.expected_size == gemma_path.stat().st_size == GEMMA_SIZE
    assert gemma.data_offset % 32 == 0
    assert 0 < gemma.data_offset < 10 * 1024 * 1024


def test_real_model_has_no_chat_template(gemma: GGUFInfo) -> None:
    assert gemma.has_chat_template is False
    assert gemma.chat_template is None
    assert "tokenizer.chat_template" not in gemma.metadata


def test_real_model_long_arrays_are_summarised_short_kept(gemma: GGUFInfo) -> None:
    assert gemma.metadata["tokenizer.ggml.tokens"] == {"type": "array", "length": 262144}
    assert gemma.metadata["tokenizer.ggml.scores"] == {"type": "array", "length": 262144}
    assert gemma.metadata["general.tags"] == ["gemma3", "gemma", "google", "text-generation"]
    assert gemma.metadata["tokenizer.ggml.add_bos_token"] is True


@pytest.mark.timing
def test_real_model_header_reads_fast(gemma_path: Path) -> None:
    read_gguf(gemma_path)  # warm the page cache
    start = time.perf_counter()
    read_gguf(gemma_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"reading the header took {elapsed:.3f} s"


def test_real_model_truncated_in_tensor_data(gemma_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with gemma_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(10 * 1024 * 1024))
    with pytest.raises(GGUFError, match=rf"is truncated: 10485760 bytes, expected at least {GEMMA_SIZE}$"):
        read_gguf(cut)


def test_real_model_truncated_in_header(gemma_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with gemma_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(1024 * 1024))  # ends inside the vocabulary
    with pytest.raises(GGUFError, match=r"is truncated: 1048576 bytes, expected at least \d+$"):
        read_gguf(cut)


# --- generated files ------------------------------------------------------------


def test_tiny_file_reads(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf", n_floats=64)
    info = read_gguf(path)
    assert info.version == 3
    assert info.tensor_count == 1
    assert info.architecture == "llama"
    assert info.name == "tiny"
    assert info.context_length == 2048
    assert info.parameter_count == 64
    assert info.file_type == 0
    assert info.quantization == "F32"
    assert info.has_chat_template is False
    assert info.chat_template is None
    assert info.data_offset % 32 == 0
    assert info.expected_size == info.data_offset + 64 * 4 == path.stat().st_size


def test_tiny_file_with_chat_template(tmp_path: Path) -> None:
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", arch="qwen2", name="q", chat_template=template))
    assert info.has_chat_template is True
    assert info.chat_template == template
    assert info.architecture == "qwen2"
    assert info.context_length == 2048


def test_empty_chat_template_does_not_count(tmp_path: Path) -> None:
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", chat_template=""))
    assert info.has_chat_template is False
    assert info.chat_template == ""


def test_every_value_type_round_trips(tmp_path: Path) -> None:
    extra: dict[str, object] = {
        "t.u8": (UINT8, 255),
        "t.i8": (INT8, -128),
        "t.u16": (UINT16, 65535),
        "t.i16": (INT16, -32768),
        "t.u32": 4_000_000_000,
        "t.i32": -5,
        "t.f32": (FLOAT32, 0.5),
        "t.bool": False,
        "t.str": "héllo",
        "t.u64": (UINT64, 2**64 - 1),
        "t.i64": (INT64, -(2**63)),
        "t.f64": (FLOAT64, 1e-300),
        "t.short": [1, 2, 3],
        "t.strings": ["a", "bc"],
        "t.nested": (ARRAY, [[1, 2], [3]]),
        "t.empty": (ARRAY, []),
        "t.long": list(range(65)),
        "t.long_strings": ["tok"] * 1000,
        "t.exactly64": list(range(64)),
    }
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", extra_metadata=extra))
    m = info.metadata
    assert (m["t.u8"], m["t.i8"], m["t.u16"], m["t.i16"]) == (255, -128, 65535, -32768)
    assert (m["t.u32"], m["t.i32"], m["t.f32"], m["t.bool"]) == (4_000_000_000, -5, 0.5, False)
    assert (m["t.u64"], m["t.i64"], m["t.f64"]) == (2**64 - 1, -(2**63), 1e-300)
    assert m["t.str"] == "héllo"
    assert m["t.short"] == [1, 2, 3]
    assert m["t.strings"] == ["a", "bc"]
    assert m["t.nested"] == [[1, 2], [3]]
    assert m["t.empty"] == []
    assert m["t.long"] == {"type": "array", "length": 65}
    assert m["t.long_strings"] == {"type": "array", "length": 1000}
    assert m["t.exactly64"] == list(range(64))
    assert info.expected_size == tmp_path.joinpath("t.gguf").stat().st_size


def test_custom_alignment(tmp_path: Path) -> None:
    info = read_gguf(write_tiny_gguf(tmp_path / "t.gguf", extra_metadata={"general.alignment": 256}))
    assert info.data_offset % 256 == 0
    assert info.expected_size == info.data_offset + 256


def test_file_type_label_from_metadata(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "t.gguf", extra_metadata={"general.file_type": 18})
    info = read_gguf(path)
    assert (info.file_type, info.quantization) == (18, "Q6_K")


def _write(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


def _with_tensors(kvs: list[bytes], tensors: list[bytes], data_bytes: int, version: int = 3) -> bytes:
    blob = header(len(tensors), len(kvs), version) + b"".join(kvs) + b"".join(tensors)
    return pad(blob) + b"\0" * data_bytes


def test_quantized_tensor_sizes(tmp_path: Path) -> None:
    # Q4_K 256x4 = 4 blocks of 144 bytes; Q8_0 64x2 = 4 blocks of 34, at offset 576.
    tensors = [tensor_info("a", [256, 4], 12, 0), tensor_info("b", [64, 2], 8, 576)]
    blob = _with_tensors([kv("general.architecture", "llama")], tensors, 576 + 136)
    info = read_gguf(_write(tmp_path / "q.gguf", blob))
    assert info.parameter_count == 1024 + 128
    assert info.expected_size == info.data_offset + 576 + 136
    assert info.file_type is None and info.quantization is None
    assert info.context_length is None


def test_unknown_tensor_type_gives_up_on_size(tmp_path: Path) -> None:
    blob = _with_tensors([], [tensor_info("a", [32], 999, 0)], 0)
    info = read_gguf(_write(tmp_path / "u.gguf", blob))
    assert info.expected_size == info.data_offset
    assert info.parameter_count == 32
    assert info.architecture is None and info.name is None


def test_version_2_reads(tmp_path: Path) -> None:
    blob = _with_tensors([kv("general.name", "old")], [tensor_info("a", [8], 0, 0)], 32, version=2)
    assert read_gguf(_write(tmp_path / "v2.gguf", blob)).version == 2


def test_no_tensors(tmp_path: Path) -> None:
    blob = header(0, 1) + kv("general.architecture", "clip")
    info = read_gguf(_write(tmp_path / "n.gguf", blob))
    assert (info.tensor_count, info.parameter_count, info.expected_size) == (0, 0, len(blob))


# --- not GGUF, truncated, corrupt ------------------------------------------------


def test_text_file_is_bad_magic(tmp_path: Path) -> None:
    path = _write(tmp_path / "README.md", b"# A model card\n\nNot weights.\n")
    with pytest.raises(GGUFError, match=r"README\.md is not a GGUF file \(bad magic\)$"):
        read_gguf(path)


def test_empty_file_is_bad_magic(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="bad magic"):
        read_gguf(_write(tmp_path / "e.gguf", b""))


def test_magic_only_is_truncated(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="truncated: 4 bytes, expected at least 24"):
        read_gguf(_write(tmp_path / "m.gguf", b"GGUF"))
    with pytest.raises(GGUFError, match="truncated: 2 bytes"):
        read_gguf(_write(tmp_path / "m2.gguf", b"GG"))


def test_tiny_file_cut_short(tmp_path: Path) -> None:
    full = write_tiny_gguf(tmp_path / "t.gguf").read_bytes()
    with pytest.raises(GGUFError, match=rf"truncated: {len(full) - 1} bytes, expected at least {len(full)}"):
        read_gguf(_write(tmp_path / "cut.gguf", full[:-1]))


def test_absurd_string_length_is_corrupt(tmp_path: Path) -> None:
    blob = header(0, 1) + struct.pack("<Q", 2**62) + b"general.name"
    start = time.perf_counter()
    with pytest.raises(GGUFError, match=r"is corrupt: string of 4611686018427387904 bytes"):
        read_gguf(_write(tmp_path / "s.gguf", blob))
    assert time.perf_counter() - start < 0.5


def test_absurd_string_inside_long_string_array_is_corrupt(tmp_path: Path) -> None:
    items = gguf_string("ok") * 100 + struct.pack("<Q", 17 * 1024 * 1024)
    bad = gguf_string("tokens") + struct.pack("<IIQ", ARRAY, STRING, 101) + items
    with pytest.raises(GGUFError, match="is corrupt: string of 17825792 bytes"):
        read_gguf(_write(tmp_path / "s.gguf", header(0, 1) + bad))


CORRUPT_HEADERS: list[tuple[bytes, str]] = [
    (header(0, 2**40), "metadata count 1099511627776 exceeds"),
    (header(2**40, 0), "tensor count 1099511627776 exceeds"),
    (header(0, 1) + gguf_string("k") + struct.pack("<IIQ", ARRAY, UINT8, 2**40), "array element count"),
    (header(0, 1) + gguf_string("k") + struct.pack("<I", 13), "unknown metadata value type 13"),
    (
        header(0, 1) + gguf_string("k") + struct.pack("<IIQ", ARRAY, 77, 0),
        "unknown metadata value type 77",
    ),
    (header(0, 2) + kv("k", 1) + kv("k", 2), "duplicate metadata key 'k'"),
    (header(0, 1) + kv("general.alignment", 48), "general.alignment 48 is not a power of two"),
    (header(0, 1) + kv("general.alignment", 0), "general.alignment 0 is not a power of two"),
    (header(1, 0) + tensor_info("t", [1, 1, 1, 1, 1], 0, 0), "tensor 't' has 5 dimensions"),
    (header(1, 0) + tensor_info("t", [8], 0, 4), "tensor 't' data offset 4 is not aligned to 32"),
    (
        header(1, 0) + tensor_info("t", [100], 12, 0),
        "tensor 't' row of 100 elements is not a multiple of",
    ),
    (header(1, 0) + tensor_info("t", [2**32, 2**32], 0, 0), "tensor 't' has too many elements"),
]


@pytest.mark.parametrize(
    ("blob", "message"),
    CORRUPT_HEADERS,
    ids=[message.replace(" ", "-") for _, message in CORRUPT_HEADERS],
)
def test_corrupt_headers(tmp_path: Path, blob: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=f"is corrupt: {message}"):
        read_gguf(_write(tmp_path / "c.gguf", pad(blob) + b"\0" * 4096))


def test_deeply_nested_arrays_are_corrupt(tmp_path: Path) -> None:
    nest = struct.pack("<IQ", ARRAY, 1) * 20 + struct.pack("<IQ", UINT8, 0)
    blob = header(0, 1) + gguf_string("k") + struct.pack("<I", ARRAY) + nest
    with pytest.raises(GGUFError, match="nested deeper than 8"):
        read_gguf(_write(tmp_path / "n.gguf", blob))


def test_unsupported_versions(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match=r"unsupported GGUF version 1 \(supported: 2, 3\)"):
        read_gguf(_write(tmp_path / "v1.gguf", header(0, 0, version=1)))
    big_endian = b"GGUF" + struct.pack(">IQQ", 3, 0, 0)
    with pytest.raises(GGUFError, match="big-endian"):
        read_gguf(_write(tmp_path / "be.gguf", big_endian))


def test_missing_file_is_oserror_not_gguferror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "nope.gguf")


def test_gguf_error_is_value_error_and_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        read_gguf(_write(tmp_path / "x.bin", b"\x89PNG\r\n\x1a\n"))
    assert "\n" not in str(caught.value)


# --- helpers --------------------------------------------------------------------


def test_is_gguf_prefix() -> None:
    assert is_gguf_prefix(b"GGUF\x03\x00\x00\x00")
    assert is_gguf_prefix(b"GGUF")
    assert not is_gguf_prefix(b"GGU")
    assert not is_gguf_prefix(b"")
    assert not is_gguf_prefix(b"gguf")
    assert not is_gguf_prefix(b"<!DOCTYPE html>")


def test_real_model_starts_with_magic(gemma_path: Path) -> None:
    with gemma_path.open("rb") as f:
        assert is_gguf_prefix(f.read(4))


@pytest.mark.parametrize(
    ("ggml_type", "block", "nbytes"),
    [
        (0, 1, 4),  # F32
        (1, 1, 2),  # F16
        (2, 32, 18),  # Q4_0
        (3, 32, 20),  # Q4_1
        (6, 32, 22),  # Q5_0
        (7, 32, 24),  # Q5_1
        (8, 32, 34),  # Q8_0
        (9, 32, 36),  # Q8_1
        (10, 256, 84),  # Q2_K
        (11, 256, 110),  # Q3_K
        (12, 256, 144),  # Q4_K
        (13, 256, 176),  # Q5_K
        (14, 256, 210),  # Q6_K
        (15, 256, 292),  # Q8_K
        (16, 256, 66),  # IQ2_XXS
        (17, 256, 74),  # IQ2_XS
        (18, 256, 98),  # IQ3_XXS
        (19, 256, 50),  # IQ1_S
        (20, 32, 18),  # IQ4_NL
        (21, 256, 110),  # IQ3_S
        (22, 256, 82),  # IQ2_S
        (23, 256, 136),  # IQ4_XS
        (24, 1, 1),  # I8
        (25, 1, 2),  # I16
        (26, 1, 4),  # I32
        (27, 1, 8),  # I64
        (28, 1, 8),  # F64
        (29, 256, 56),  # IQ1_M
        (30, 1, 2),  # BF16
        (34, 256, 54),  # TQ1_0
        (35, 256, 66),  # TQ2_0
        (39, 32, 17),  # MXFP4
    ],
)
def test_ggml_type_sizes(ggml_type: int, block: int, nbytes: int) -> None:
    assert GGML_TYPE_SIZES[ggml_type] == (block, nbytes)


def test_quantization_labels() -> None:
    assert quantization_label(15) == "Q4_K_M"
    assert quantization_label(18) == "Q6_K"
    assert quantization_label(7) == "Q8_0"
    assert quantization_label(1) == "F16"
    assert quantization_label(32) == "BF16"
    assert quantization_label(30) == "IQ4_XS"
    assert quantization_label(1024 | 15) == "Q4_K_M (guessed)"
    assert quantization_label(5) is None
    assert quantization_label(999) is None


def test_only_the_header_matters(gemma_path: Path, tmp_path: Path) -> None:
    # The real header followed by a hole where the 246 MB of tensors were:
    # tensor data is never parsed, only its extent checked.
    gemma = read_gguf(gemma_path)
    sparse = tmp_path / "sparse.gguf"
    with gemma_path.open("rb") as src, sparse.open("wb") as dst:
        dst.write(src.read(gemma.data_offset))
        dst.truncate(gemma.expected_size)
    assert read_gguf(sparse).parameter_count == gemma.parameter_count


def test_many_small_keys_hit_the_metadata_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each field is tiny and the count is under MAX_COUNT, but the Python
    # objects for them all would cost many times the header's size. The budget
    # is lowered to 1 MiB to keep the file small; the mechanism is the same.
    monkeypatch.setattr(gguf, "MAX_KEPT_BYTES", 1024 * 1024)
    n = 20_000
    blob = header(0, n) + b"".join(kv(f"{i:07d}", (UINT8, 0)) for i in range(n))
    with pytest.raises(GGUFError, match="is corrupt: metadata exceeds the limit of 1 MiB"):
        read_gguf(_write(tmp_path / "k.gguf", blob))


def test_many_big_strings_hit_the_metadata_budget(tmp_path: Path) -> None:
    big = "x" * (15 * 1024 * 1024)
    blob = header(0, 5) + b"".join(kv(f"k{i}", big) for i in range(5))
    with pytest.raises(GGUFError, match="metadata exceeds the limit"):
        read_gguf(_write(tmp_path / "s.gguf", blob))
