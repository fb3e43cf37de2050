"""The memory estimate of a deployment (server/memory.py), checked against numbers computed by hand
from generated GGUF headers, against the real small gemma's header, and against the memory a real
llama-server engine takes when started the way the supervisor starts it.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
from ggufgen import header, kv, pad, tensor_info

from kamiwaza_cli.server import memory
from kamiwaza_cli.server.engines import Deployment, EngineUnavailable
from kamiwaza_cli.server.engines.llamacpp import LlamaCpp, find_binary
from kamiwaza_cli.server.supervisor import engine_environment, estimate_deployment, free_port

MIB = 1 << 20
F32, F16, Q8_0, Q4_K = 0, 1, 8, 12
# (elements per block, bytes per block) of the types used below, as ggml defines them.
BLOCKS = {F32: (1, 4), F16: (1, 2), Q8_0: (32, 34), Q4_K: (256, 144)}


def write_gguf(path: Path, metadata: Mapping[str, object], tensors: list[tuple[str, list[int], int]]) -> Path:
    """A valid GGUF v3 file with these metadata and tensors (their data zeros, laid out aligned)."""
    blob = header(len(tensors), len(metadata)) + b"".join(kv(k, v) for k, v in metadata.items())
    offset, sizes = 0, []
    for name, dims, ggml_type in tensors:
        blob += tensor_info(name, dims, ggml_type, offset)
        elements = 1
        for d in dims:
            elements *= d
        per_block, block_bytes = BLOCKS[ggml_type]
        size = elements // per_block * block_bytes
        sizes.append(size)
        offset += size + (-size % 32)
    data = b"".join(b"\0" * s + b"\0" * (-s % 32) for s in sizes)
    path.write_bytes(pad(blob) + data)
    return path


LLAMA = {
    "general.architecture": "llama",
    "llama.context_length": 2048,
    "llama.block_count": 4,
    "llama.embedding_length": 256,
    "llama.feed_forward_length": 512,
    "llama.attention.head_count": 8,
    "llama.attention.head_count_kv": 2,
    # 100 tokens: longer than the 64 items the reader keeps, so only the length survives.
    "tokenizer.ggml.tokens": [f"t{i}" for i in range(100)],
}
TENSORS = [("norm", [256], F32), ("q8", [256, 4], Q8_0), ("q4k", [256, 2], Q4_K), ("f16", [64], F16)]
# 256 x 4 bytes + 1024 / 32 x 34 + 512 / 256 x 144 + 64 x 2
TENSOR_BYTES = 1024 + 1088 + 288 + 128


def test_weights_are_the_tensor_bytes_by_type(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", LLAMA, TENSORS)
    est = memory.estimate(model, slots=1, context_per_slot=256)
    assert est.weights == TENSOR_BYTES < model.stat().st_size  # the header and padding are not weights
    from kamiwaza_cli.gguf import read_gguf

    assert read_gguf(model).tensor_bytes_by_type == {F32: 1024, Q8_0: 1088, Q4_K: 288, F16: 128}


def test_kv_cache_and_compute_by_hand(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", LLAMA, TENSORS)
    est = memory.estimate(model, slots=2, context_per_slot=300)
    # 300 cells round up to 512 per slot; head dim 256 / 8 = 32 for K and for V; 2 KV heads; 4 layers; f16.
    assert est.kv_cache == 2 * 512 * 4 * 2 * (32 + 32) * 2 == 1_048_576
    assert est.prompt_cache == 1 * MIB  # the engine's --cache-ram: the KV size in whole MiB
    # Base + logits of one token per slot + attention scores of a 512-token micro-batch against a
    # full slot for 8 heads + three feed-forward and eight embedding-wide f32 activations.
    assert est.compute == memory.COMPUTE_BASE + 2 * 100 * 4 + 512 * 512 * 8 * 4 + 512 * (3 * 512 + 8 * 256) * 4
    assert est.total == est.weights + est.kv_cache + est.prompt_cache + est.compute
    assert (est.slots, est.context_per_slot) == (2, 300)
    assert "2 slots x 300 tokens" in est.describe()


def test_per_layer_kv_heads_and_explicit_head_lengths(tmp_path: Path) -> None:
    meta = {
        **LLAMA,
        "llama.attention.head_count_kv": [0, 2, 4, 2],  # a hybrid model: layer 0 has no attention
        "llama.attention.key_length": 16,
        "llama.attention.value_length": 8,
    }
    est = memory.estimate(write_gguf(tmp_path / "m.gguf", meta, TENSORS), slots=1, context_per_slot=256)
    assert est.kv_cache == (0 + 2 + 4 + 2) * (16 + 8) * 256 * 2


def test_a_per_layer_array_the_reader_summarised_counts_every_head(tmp_path: Path) -> None:
    # 70 layers: the reader keeps only the array's length; the query heads are the upper bound.
    meta = {**LLAMA, "llama.block_count": 70, "llama.attention.head_count_kv": [1] * 70}
    est = memory.estimate(write_gguf(tmp_path / "m.gguf", meta, TENSORS), slots=1, context_per_slot=256)
    assert est.kv_cache == 70 * 8 * (32 + 32) * 256 * 2


def test_without_head_count_kv_every_head_has_its_own_kv(tmp_path: Path) -> None:
    meta = {k: v for k, v in LLAMA.items() if k != "llama.attention.head_count_kv"}
    est = memory.estimate(write_gguf(tmp_path / "m.gguf", meta, TENSORS), slots=1, context_per_slot=256)
    assert est.kv_cache == 4 * 8 * 64 * 256 * 2


def test_split_files_and_the_projector_add_their_weights(tmp_path: Path) -> None:
    first = write_gguf(tmp_path / "m-00001-of-00002.gguf", {**LLAMA, "split.count": (2, 2)}, TENSORS)
    write_gguf(tmp_path / "m-00002-of-00002.gguf", {"split.count": (2, 2)}, [("more", [256, 8], Q8_0)])
    projector = write_gguf(tmp_path / "mmproj.gguf", {"general.architecture": "clip"}, [("p", [128], F32)])
    est = memory.estimate(first, slots=1, context_per_slot=256, projector=projector)
    assert est.weights == TENSOR_BYTES + 2048 // 32 * 34 + 128 * 4


def test_an_unreadable_file_counts_at_its_size_with_no_kv(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf" * 1000)
    est = memory.estimate(junk, slots=4, context_per_slot=4096)
    assert (est.weights, est.kv_cache, est.prompt_cache, est.compute) == (10_000, 0, 0, memory.COMPUTE_BASE)


def test_a_context_above_the_trained_length_is_refused_before_anything_is_estimated(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", LLAMA, TENSORS)
    with pytest.raises(EngineUnavailable, match="more than the 2048 this model was trained for"):
        estimate_deployment(model, {"n_ctx": 10**9}, None, None)
    est = estimate_deployment(model, {}, None, None)  # no context asked: the default, capped at 2048
    assert (est.slots, est.context_per_slot) == (4, 2048)
    assert est.kv_cache == 4 * 2048 * 4 * 2 * 64 * 2
    with pytest.raises(EngineUnavailable, match="n_ctx"):
        estimate_deployment(model, {"n_ctx": -5}, None, None)
    with pytest.raises(EngineUnavailable, match="max_concurrent_requests"):
        estimate_deployment(model, {}, 65, None)


def test_the_small_gemma_by_hand(gemma_path: Path) -> None:
    est = estimate_deployment(gemma_path, {}, None, None)
    # llama.cpp reports "CPU_Mapped model buffer size = 235.16 MiB" for this file.
    assert est.weights == 246_587_904
    # 18 layers, 1 KV head of 256 for K and for V, 4 slots x 4096 cells, f16: every layer counted as a
    # full one (llama.cpp keeps 15 of them to a 512-token window and allocates 108 MiB, not 288).
    assert est.kv_cache == 18 * 1 * (256 + 256) * 4 * 4096 * 2 == 288 * MIB
    assert est.compute == memory.COMPUTE_BASE + 4 * 262_144 * 4 + 512 * 4096 * 4 * 4 + 512 * (3 * 2048 + 8 * 640) * 4


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_estimate_bounds_what_a_real_engine_takes(gemma_path: Path, tmp_path: Path) -> None:
    """The engine started as the supervisor starts it (4 slots x 4096), after one reply: its resident
    memory stays under the estimate, and the estimate is not more than three times it."""
    if find_binary() is None:
        pytest.skip("llama-server is not built (make install)")
    port = free_port()
    spec = LlamaCpp().launch(gemma_path, {}, Deployment(port=port, api_key="k"))
    est = estimate_deployment(gemma_path, {}, None, None)
    assert spec.argv[spec.argv.index("--cache-ram") + 1] == str(est.prompt_cache // MIB)
    log = (tmp_path / "engine.log").open("wb")
    proc = subprocess.Popen(spec.argv, env=engine_environment(spec.env), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "engine.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = b'{"prompt": "The three primary colours are", "max_tokens": 16}'
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=body,
            headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
        rss = _rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    print(f"estimate {est.total / MIB:.0f} MiB ({est.describe()}); engine RSS {rss / MIB:.0f} MiB")
    assert rss <= est.total <= 3 * rss, (rss, est)


def test_human_sizes() -> None:
    assert memory.human(235 * MIB + 1) == "236 MiB"
    assert memory.human(3 * (1 << 30) // 2) == "1.50 GiB"
