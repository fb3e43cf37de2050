"""Building llama-server: the flags chosen per machine, the cache, and one-line refusals.

The machines are described, not needed: Metal, CUDA and macOS builds cannot run here, so
what is tested is which CMake arguments each machine gets. The real build ran once, in
``make install``, before this suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kamiwaza_cli.server.engines import build
from kamiwaza_cli.server.engines.build import X86_FLAGS, BuildError, Machine, backend_flags, choose_backend

LINUX_X86 = Machine("Linux", "x86_64", has_nvcc=False, has_nvidia_gpu=False)
LINUX_ARM = Machine("Linux", "aarch64", has_nvcc=False, has_nvidia_gpu=False)
MAC_ARM = Machine("Darwin", "arm64", has_nvcc=False, has_nvidia_gpu=False)
MAC_INTEL = Machine("Darwin", "x86_64", has_nvcc=False, has_nvidia_gpu=False)
CUDA_BOX = Machine("Linux", "x86_64", has_nvcc=True, has_nvidia_gpu=True)
NVCC_NO_GPU = Machine("Linux", "x86_64", has_nvcc=True, has_nvidia_gpu=False)  # this CI image
WINDOWS = Machine("Windows", "AMD64", has_nvcc=False, has_nvidia_gpu=False)


@pytest.mark.parametrize(
    ("machine", "backend"),
    [
        (LINUX_X86, "cpu"),
        (LINUX_ARM, "cpu"),
        (MAC_ARM, "metal"),
        (MAC_INTEL, "cpu"),
        (CUDA_BOX, "cuda"),
        (NVCC_NO_GPU, "cpu"),  # a compiler alone is no reason for a long CUDA build
        (WINDOWS, "cpu"),
    ],
)
def test_backend_by_machine(machine: Machine, backend: str) -> None:
    assert choose_backend(machine) == backend


def test_a_backend_can_be_forced_and_a_wrong_name_is_one_line() -> None:
    assert choose_backend(CUDA_BOX, "cpu") == "cpu"
    assert choose_backend(MAC_ARM, " CPU ") == "cpu"
    assert choose_backend(LINUX_X86, "cuda") == "cuda"
    with pytest.raises(BuildError, match="KAMIWAZA_LLAMA_BACKEND='vulkan' is not one of: cpu, metal, cuda"):
        choose_backend(LINUX_X86, "vulkan")


def test_x86_vector_flags_only_on_x86_linux_and_native_code_only_on_a_mac() -> None:
    assert set(X86_FLAGS) <= set(backend_flags(LINUX_X86, "cpu"))
    assert "-DGGML_NATIVE=OFF" in backend_flags(LINUX_X86, "cpu")
    for machine in (LINUX_ARM, MAC_ARM, MAC_INTEL, WINDOWS):
        assert not set(X86_FLAGS) & set(backend_flags(machine, choose_backend(machine))), machine
    assert "-DGGML_NATIVE=OFF" in backend_flags(LINUX_ARM, "cpu")
    assert "-DGGML_NATIVE=ON" in backend_flags(MAC_INTEL, "cpu")


def test_metal_and_cuda_flags() -> None:
    metal = backend_flags(MAC_ARM, "metal")
    assert "-DGGML_METAL=ON" in metal and "-DGGML_METAL_EMBED_LIBRARY=ON" in metal
    assert "-DGGML_METAL=OFF" in backend_flags(MAC_ARM, "cpu")
    assert "-DGGML_CUDA=ON" in backend_flags(CUDA_BOX, "cuda")
    assert "-DGGML_CUDA=ON" not in backend_flags(NVCC_NO_GPU, choose_backend(NVCC_NO_GPU))


def test_extra_cmake_arguments_come_last_and_change_the_cache_key() -> None:
    env = {"KAMIWAZA_LLAMA_CMAKE_ARGS": "-DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"}
    args = build.cmake_args(LINUX_X86, env)
    assert args[-2:] == ["-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=OpenBLAS"]
    plain = build.cmake_args(LINUX_X86, {})
    assert build.build_key(args, "gcc 12", LINUX_X86) != build.build_key(plain, "gcc 12", LINUX_X86)
    assert build.build_key(plain, "gcc 12", LINUX_X86) != build.build_key(plain, "gcc 13", LINUX_X86)
    assert build.build_key(plain, "gcc 12", LINUX_X86) == build.build_key(list(plain), "gcc 12", LINUX_X86)


def test_a_cached_build_is_reused_without_compiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"KAMIWAZA_BUILD_CACHE": str(tmp_path)}
    machine = Machine.this()
    key = build.build_key(build.cmake_args(machine, env), build._compiler_identity(env), machine)
    cached = tmp_path / f"llama-server-{key}" / build.BINARY
    cached.parent.mkdir()
    cached.write_text("#!/bin/sh\n")

    def no_download(_cache: Path) -> Path:
        raise AssertionError("a cached build must not fetch or compile anything")

    monkeypatch.setattr(build, "fetch_sources", no_download)
    assert build.build(machine, env) == cached
    installed = build.install(cached, tmp_path)
    assert installed.read_text() == "#!/bin/sh\n" and os.access(installed, os.X_OK)


def test_missing_tools_are_one_line_errors(tmp_path: Path) -> None:
    empty_path = {"PATH": str(tmp_path), "KAMIWAZA_BUILD_CACHE": str(tmp_path / "cache")}
    with pytest.raises(BuildError, match="no C\\+\\+ compiler found: install one"):
        build._compiler_identity(empty_path)
    script = [sys.executable, "-m", "kamiwaza_cli.server.engines.build"]
    env = {**os.environ, **empty_path, "CXX": "/nonexistent/c++"}
    env.pop("KAMIWAZA_LLAMA_SERVER", None)
    done = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("Error: ")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("llama-server-*"))


def test_missing_cmake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="cmake not found: install it"):
        build._cmake()


def test_a_binary_named_by_the_user_means_nothing_is_built(tmp_path: Path) -> None:
    env = {**os.environ, "KAMIWAZA_LLAMA_SERVER": "/opt/llama.cpp/build/bin/llama-server"}
    env["KAMIWAZA_BUILD_CACHE"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli.server.engines.build"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "not building" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_print_flags_shows_this_machines_choice() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli.server.engines.build", "--print-flags"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("KAMIWAZA_LLAMA")},
    )
    assert done.returncode == 0
    assert done.stdout.split() == build.cmake_args(Machine.this(), {})
