"""How the llama.cpp engine is started: llama-server's argv and environment, per model and machine.

No engine runs here: ``launch`` only reads the GGUF header and (for GPU offload) asks the
binary which devices it has, so a stand-in binary that prints a device list describes a
Metal or CUDA build on this CPU-only machine.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ggufgen import write_tiny_gguf

from kamiwaza_cli import portable
from kamiwaza_cli.server.engines import Deployment, EngineUnavailable, llamacpp, pick
from kamiwaza_cli.server.engines.llamacpp import LlamaCpp, parse_devices

KEY = "engine-secret-key"


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _fake_server(tmp_path: Path, devices: str = "") -> Path:
    """A stand-in llama-server whose --list-devices prints ``devices`` (one per line)."""
    script = tmp_path / "llama-server"
    listing = "".join(f"  {d}\\n" for d in devices.splitlines() if d)
    script.write_text(f'#!/bin/sh\nprintf "Available devices:\\n{listing}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def cpu_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = _fake_server(tmp_path)
    monkeypatch.setenv("KAMIWAZA_LLAMA_SERVER", str(binary))
    return binary


def _launch(model: Path, config: dict | None = None, **deployment: object) -> tuple[list[str], dict, dict]:
    spec = LlamaCpp().launch(model, config or {}, Deployment(port=4321, api_key=KEY, **deployment))  # type: ignore[arg-type]
    return spec.argv, spec.env, spec.facts


def test_defaults_bind_loopback_with_four_slots_physical_cores_and_the_key_out_of_argv(
    cpu_build: Path, tmp_path: Path
) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf", chat_template="{{ messages }}")
    argv, env, facts = _launch(model)
    assert argv[0] == str(cpu_build)
    assert _value(argv, "--host") == "127.0.0.1" and _value(argv, "--port") == "4321"
    assert _value(argv, "--parallel") == "4" and "--no-kv-unified" in argv
    # Each of the 4 slots gets the whole per-slot context: 2048 is the model's trained length.
    assert _value(argv, "--ctx-size") == str(4 * 2048) and facts["context_per_slot"] == 2048
    assert _value(argv, "--threads") == str(portable.physical_cores()) == _value(argv, "--threads-batch")
    assert "--jinja" in argv and "--chat-template" not in argv  # the GGUF's own template
    assert KEY not in " ".join(argv) and env["LLAMA_API_KEY"] == KEY
    assert "--n-gpu-layers" not in argv  # a CPU build has nothing to offload to


def test_engine_threads_setting_sets_every_engines_threads_and_the_model_config_wins(
    cpu_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf")
    monkeypatch.setenv("KAMIWAZA_ENGINE_THREADS", "1")
    argv, _, facts = _launch(model)
    assert _value(argv, "--threads") == "1" == _value(argv, "--threads-batch") and facts["threads"] == 1
    argv, _, _ = _launch(model, {"n_threads": 3})
    assert _value(argv, "--threads") == "3"
    for bad in ("0", "two"):  # not a whole number of at least 1: the cores, and a warning naming it
        monkeypatch.setenv("KAMIWAZA_ENGINE_THREADS", bad)
        argv, _, _ = _launch(model)
        assert _value(argv, "--threads") == str(portable.physical_cores())
        assert f"KAMIWAZA_ENGINE_THREADS={bad!r}" in caplog.text


def test_slots_and_context_follow_the_deployment_and_config_within_the_trained_length(
    cpu_build: Path, tmp_path: Path
) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf", extra_metadata={"llama.context_length": 32768})
    argv, _, facts = _launch(model, {"n_ctx": 8192, "n_threads": 3}, slots=2)
    assert _value(argv, "--parallel") == "2" and _value(argv, "--ctx-size") == "16384"
    assert facts == {"slots": 2, "context_per_slot": 8192, "threads": 3, "embeddings": False}
    # The deployment's context (chosen at admission, or --ctx) wins over the config's.
    argv, _, facts = _launch(model, {"n_ctx": 8192}, context=1024)
    assert _value(argv, "--ctx-size") == str(4 * 1024) and facts["context_per_slot"] == 1024
    # Never above what the model was trained for, never too small: refused with the bounds, not capped.
    with pytest.raises(EngineUnavailable, match="1000000 tokens is more than the 32768 .*--ctx 32768"):
        _launch(model, {"n_ctx": 10**6})
    with pytest.raises(EngineUnavailable, match="40000 tokens is more than the 32768"):
        _launch(model, context=40000)
    with pytest.raises(EngineUnavailable, match="100 tokens is too small: ask for at least 512"):
        _launch(model, {"max_model_len": 100})
    argv, _, _ = _launch(model, {"max_concurrent_requests": 6})
    assert _value(argv, "--parallel") == "6"


def test_slot_counts_out_of_range_are_refused(cpu_build: Path, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(EngineUnavailable, match="max_concurrent_requests must be between 1 and 64"):
        _launch(model, slots=65)
    with pytest.raises(EngineUnavailable, match="max_concurrent_requests must be between 1 and 64"):
        _launch(model, {"max_concurrent_requests": -1})


def test_a_bad_number_in_the_config_is_one_clear_refusal(cpu_build: Path, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(EngineUnavailable, match="'n_ctx' must be a whole number"):
        _launch(model, {"n_ctx": "lots"})


@pytest.mark.parametrize(
    ("arch", "builtin"),
    [("gemma3", "gemma"), ("qwen2", "chatml"), ("llama", "llama3"), ("phi3", "phi3"), ("mystery", "chatml")],
)
def test_a_gguf_without_a_template_gets_the_builtin_one_for_its_architecture(
    cpu_build: Path, tmp_path: Path, arch: str, builtin: str
) -> None:
    argv, _, _ = _launch(write_tiny_gguf(tmp_path / "m.gguf", arch=arch))
    assert "--no-jinja" in argv and _value(argv, "--chat-template") == builtin


def test_a_config_template_overrides_the_gguf(cpu_build: Path, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf", chat_template="{{ messages }}")
    argv, _, _ = _launch(model, {"chat_template": "chatml"})
    assert "--no-jinja" in argv and _value(argv, "--chat-template") == "chatml"
    jinja = "{% for m in messages %}{{ m.content }}{% endfor %}"
    argv, _, _ = _launch(model, {"chat_template": jinja})
    assert "--jinja" in argv and _value(argv, "--chat-template") == jinja


def test_embedding_models_run_with_embeddings(cpu_build: Path, tmp_path: Path) -> None:
    bert = write_tiny_gguf(tmp_path / "bert.gguf", arch="bert", extra_metadata={"bert.pooling_type": 1})
    argv, _, facts = _launch(bert)
    assert "--embeddings" in argv and "--pooling" not in argv and facts["embeddings"] is True
    # A pooled model of a generative architecture (Qwen3-Embedding style) is an embedding model too.
    qwen = write_tiny_gguf(tmp_path / "q.gguf", arch="qwen3", extra_metadata={"qwen3.pooling_type": 3})
    assert "--embeddings" in _launch(qwen)[0]
    # A generative model asked to embed gets a pooling, which OpenAI's /v1/embeddings needs.
    gen = write_tiny_gguf(tmp_path / "g.gguf", arch="gemma3")
    argv, _, _ = _launch(gen, {"embeddings": True})
    assert "--embeddings" in argv and _value(argv, "--pooling") == "mean"
    assert "--embeddings" not in _launch(gen)[0]


def test_a_vision_model_gets_its_projector(cpu_build: Path, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf")
    projector = write_tiny_gguf(tmp_path / "mmproj-model-f16.gguf", arch="clip")
    argv, _, _ = _launch(model, projector=projector)
    assert _value(argv, "--mmproj") == str(projector)
    assert "--mmproj" not in _launch(model)[0]


@pytest.mark.parametrize(
    "devices", ["Metal: Apple M2 Pro (21845 MiB, 21844 MiB free)", "CUDA0: NVIDIA L4 (22563 MiB, 22000 MiB free)"]
)
def test_a_gpu_build_offloads_every_layer_that_fits_unless_the_cpu_is_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devices: str
) -> None:
    monkeypatch.setenv("KAMIWAZA_LLAMA_SERVER", str(_fake_server(tmp_path, devices)))
    model = write_tiny_gguf(tmp_path / "m.gguf")
    assert _value(_launch(model)[0], "--n-gpu-layers") == "auto"
    assert _value(_launch(model, {"n_gpu_layers": 20})[0], "--n-gpu-layers") == "20"
    assert _value(_launch(model, force_cpu=True)[0], "--n-gpu-layers") == "0"


def test_device_listings() -> None:
    assert parse_devices("Available devices:\n  (none)\n") == ()
    assert parse_devices("noise\nAvailable devices:\n  CUDA0: NVIDIA L4 (1 MiB)\n  CUDA1: NVIDIA L4 (1 MiB)\n") == (
        "CUDA0: NVIDIA L4 (1 MiB)",
        "CUDA1: NVIDIA L4 (1 MiB)",
    )
    assert parse_devices("Available devices:\n  CPU: Intel Xeon\n") == ()
    assert parse_devices("") == ()


def test_where_the_binary_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAMIWAZA_LLAMA_SERVER", str(tmp_path / "nowhere" / "llama-server"))
    with pytest.raises(EngineUnavailable, match="KAMIWAZA_LLAMA_SERVER=.*make install"):
        LlamaCpp().check_installed()
    not_executable = tmp_path / "llama-server"
    not_executable.write_text("")
    monkeypatch.setenv("KAMIWAZA_LLAMA_SERVER", str(not_executable))
    with pytest.raises(EngineUnavailable, match="not executable"):
        LlamaCpp().check_installed()
    assert llamacpp.find_binary({}) is not None  # make install put one beside the interpreter


def test_engine_choice_by_file_kind(tmp_path: Path) -> None:
    assert pick([Path("x.gguf")]).name == "llamacpp"
    with pytest.raises(EngineUnavailable, match="safetensors"):
        pick([Path("model.safetensors"), Path("config.json"), Path("README.md")])


@pytest.mark.parametrize(
    ("line", "code", "cause"),
    [
        # Lines as the pinned llama.cpp prints them (tests/test_serving_errors.py makes the real ones).
        ("0.00.006.7 E llama_model_load: error loading model: unknown model architecture: 'xyz'",
         "MODEL_LOADING_FAILURE", "does not support the model architecture 'xyz'"),
        ("E llama_model_load: error loading model: llama_model_loader: failed to load GGUF split from "
         "/m/a-00002-of-00005.gguf",
         "MODEL_LOADING_FAILURE", "a part of the split model is missing: a-00002-of-00005.gguf"),
        ("llama_model_load: error loading model: failed to load split 3 of 5", "MODEL_LOADING_FAILURE",
         "part 3 of the 5"),
        ("E llama_model_load: error loading model: tensor 'weight' data is not within the file bounds, model is "
         "corrupted or incomplete", "MODEL_LOADING_FAILURE", "corrupt or incomplete"),
        ("E gguf_init_from_reader: failed to read header", "MODEL_LOADING_FAILURE", "corrupt or incomplete"),
        ("E ggml_aligned_malloc: insufficient memory (attempted to allocate 3072.00 MB)", "OOM", "allocate 3072 MiB"),
        ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate CPU buffer of size 14600000000", "OOM",
         "allocate 13923 MiB"),
        ("E llama_model_load: error loading model: mmap failed: Cannot allocate memory", "OOM", "weights (mmap)"),
        ("CUDA error: out of memory", "OOM", "ran out of memory"),
        ("ggml_cuda_init: CUDA error 999", "CUDA_ERROR", "the GPU failed"),
        ("error while handling argument \"--ctx-size\": invalid argument", "INVALID_CONFIG", "refused its settings"),
        ("E llama_model_load: error loading model: missing tensor 'token_embd.weight'", "MODEL_LOADING_FAILURE",
         "could not load the model: missing tensor 'token_embd.weight'"),
        ("Segmentation fault", "CONTAINER_EXITED", "the engine stopped: Segmentation fault"),
    ],
)  # fmt: skip
def test_failures_are_classified_from_the_log_with_a_next_step(line: str, code: str, cause: str) -> None:
    failure = LlamaCpp().classify_failure(["noise", line], "m")
    assert failure.code == code and cause in failure.cause, failure
    assert failure.next_step and "\n" not in failure.cause + failure.next_step
