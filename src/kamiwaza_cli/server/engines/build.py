"""Building llama.cpp's ``llama-server`` for this machine, from pinned sources, cached.

``python -m kamiwaza_cli.server.engines.build`` (``make install`` runs this file with the
system Python, beside the pip install: it needs nothing but the standard library) fetches the
llama.cpp sources that one pinned llama-cpp-python source distribution vendors (PyPI is
the only network these installs may use), checks their sha256, builds the one static
``llama-server`` binary with CMake and puts it beside the Python interpreter
(``<venv>/bin/llama-server``), where the engine looks first.

Builds are cached under ``$KAMIWAZA_BUILD_CACHE`` (default ``~/.cache/kamiwaza``), keyed by
the sources, the CMake arguments and the compiler, so a second install or a CI run on the
same machine copies the binary instead of compiling for minutes.

The backend is chosen by machine (``backend_flags``): Metal on Apple Silicon, CUDA where
``nvcc`` and an NVIDIA GPU are both present, else the CPU, with x86 vector flags only on
x86 Linux (a native build crashes on VMs that misreport their CPU). ``KAMIWAZA_LLAMA_BACKEND``
(``cpu``, ``metal``, ``cuda``) forces one; ``KAMIWAZA_LLAMA_CMAKE_ARGS`` adds arguments;
``KAMIWAZA_LLAMA_SERVER`` names a binary built elsewhere, and then nothing is built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# llama-cpp-python's source distribution vendors llama.cpp (vendor/llama.cpp); this release's
# llama-server is the one measured in docs/benchmarks.md.
SOURCE_PACKAGE = "llama-cpp-python"
SOURCE_VERSION = "0.3.36"
SOURCE_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
BINARY = "llama-server.exe" if os.name == "nt" else "llama-server"
# Bump when the way the binary is built changes, so cached builds are not reused.
RECIPE = 1

COMMON_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary, copied out of the build tree
    "-DLLAMA_CURL=OFF",  # models come from the local server's own downloads, never from llama.cpp
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would fetch the web UI from the network at build time
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_CCACHE=OFF",
]
X86_FLAGS = ["-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]
BACKENDS = ("cpu", "metal", "cuda")


class BuildError(Exception):
    """The build cannot go on; the message is one line naming what to install or set."""


@dataclass(frozen=True)
class Machine:
    """What the choice of flags depends on, so tests can describe any machine."""

    system: str  # platform.system(): Linux, Darwin, Windows
    arch: str  # platform.machine(): x86_64, AMD64, arm64, aarch64
    has_nvcc: bool
    has_nvidia_gpu: bool

    @classmethod
    def this(cls) -> Machine:
        return cls(platform.system(), platform.machine(), _find_nvcc() is not None, _nvidia_gpu_present())


def _find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _nvidia_gpu_present() -> bool:
    # A CUDA compiler alone (CI images often carry one) is no reason for a 30-minute CUDA build.
    if Path("/dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def choose_backend(machine: Machine, forced: str | None = None) -> str:
    """cpu, metal or cuda: what this machine can accelerate with, unless one is forced."""
    if forced:
        backend = forced.strip().lower()
        if backend not in BACKENDS:
            raise BuildError(f"KAMIWAZA_LLAMA_BACKEND={forced!r} is not one of: {', '.join(BACKENDS)}")
        return backend
    if machine.system == "Darwin" and machine.arch in ("arm64", "aarch64"):
        return "metal"
    if machine.has_nvcc and machine.has_nvidia_gpu:
        return "cuda"
    return "cpu"


def backend_flags(machine: Machine, backend: str) -> list[str]:
    """The CMake arguments for this machine and backend (beyond ``COMMON_FLAGS``)."""
    x86 = machine.arch.lower() in ("x86_64", "amd64", "x64", "i686")
    flags: list[str] = []
    if machine.system == "Darwin":
        # The user's own Mac: native CPU code is safe there. Metal is on by default on macOS,
        # so say what was chosen either way; the shaders are embedded in the binary.
        flags.append("-DGGML_NATIVE=ON")
        if backend == "metal":
            flags += ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]
        else:
            flags.append("-DGGML_METAL=OFF")
    else:
        # Portable: a native build can use instructions a VM advertises but does not run.
        flags.append("-DGGML_NATIVE=OFF")
        if x86 and machine.system == "Linux":
            flags += X86_FLAGS
    if backend == "cuda":
        flags.append("-DGGML_CUDA=ON")
    return flags


def cmake_args(machine: Machine, env: dict[str, str]) -> list[str]:
    backend = choose_backend(machine, env.get("KAMIWAZA_LLAMA_BACKEND") or None)
    extra = shlex.split(env.get("KAMIWAZA_LLAMA_CMAKE_ARGS", ""))
    return COMMON_FLAGS + backend_flags(machine, backend) + extra


def cache_root(env: dict[str, str]) -> Path:
    if env.get("KAMIWAZA_BUILD_CACHE"):
        return Path(env["KAMIWAZA_BUILD_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kamiwaza"


def _compiler_identity(env: dict[str, str]) -> str:
    search = env.get("PATH")
    cxx = env.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c, path=search)), None)
    if cxx is None:
        raise BuildError(
            "no C++ compiler found: install one (Debian/Ubuntu: apt-get install build-essential; "
            "macOS: xcode-select --install), or set KAMIWAZA_LLAMA_SERVER to a llama-server you have"
        )
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise BuildError(f"the C++ compiler {cxx!r} does not run: {exc}") from exc
    return (out.stdout.splitlines() or [cxx])[0]


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError(
            "cmake not found: install it (apt-get install cmake, brew install cmake, or pip install cmake), "
            "or set KAMIWAZA_LLAMA_SERVER to a llama-server you have"
        )
    return cmake


def build_key(args: list[str], compiler: str, machine: Machine) -> str:
    facts = {
        "source": SOURCE_SHA256,
        "recipe": RECIPE,
        "cmake_args": args,
        "compiler": compiler,
        "system": machine.system,
        "arch": machine.arch,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sources(cache: Path) -> Path:
    """The pinned source distribution, from the cache or from PyPI (with pip), sha256-checked."""
    sdist = cache / "sources" / f"llama_cpp_python-{SOURCE_VERSION}.tar.gz"
    if sdist.exists() and _sha256(sdist) == SOURCE_SHA256:
        return sdist
    sdist.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=sdist.parent) as tmp:
        print(f"Fetching the llama.cpp sources ({SOURCE_PACKAGE} {SOURCE_VERSION} from PyPI)...", file=sys.stderr)
        # --no-binary names the one package: with ":all:" pip would also build the sdist's build
        # requirements from source to prepare its metadata (6.5 minutes here instead of 8 s).
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", SOURCE_PACKAGE]
        cmd += ["--dest", tmp, f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = next(Path(tmp).glob("*.tar.gz"), None)
        if done.returncode != 0 or got is None:
            last = (done.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
            raise BuildError(f"could not download {SOURCE_PACKAGE} {SOURCE_VERSION} from PyPI: {last}")
        if _sha256(got) != SOURCE_SHA256:
            raise BuildError(f"{got.name} from PyPI does not have the pinned sha256 {SOURCE_SHA256}; not building it")
        os.replace(got, sdist)
    return sdist


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    prefix = f"llama_cpp_python-{SOURCE_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and "/.git" not in m.name]
        # The archive is checked against a pinned hash; still, nothing may land outside dest.
        root = dest.resolve()
        for m in members:
            if not (m.isfile() or m.isdir()) or root not in (root / m.name).resolve().parents:
                raise BuildError(f"unexpected entry {m.name!r} in {sdist.name}; not building it")
        tar.extractall(dest, members=members)  # noqa: S202 (checked above)
    return dest / prefix


def build(machine: Machine, env: dict[str, str], jobs: int | None = None) -> Path:
    """The cached llama-server for this machine, building it first when there is none."""
    args = cmake_args(machine, env)
    compiler = _compiler_identity(env)
    cmake = _cmake()
    cache = cache_root(env)
    key = build_key(args, compiler, machine)
    out_dir = cache / f"llama-server-{key}"
    binary = out_dir / BINARY
    if binary.exists():
        return binary
    sdist = fetch_sources(cache)
    jobs = jobs or os.cpu_count() or 2
    started = time.monotonic()
    print(f"Building llama-server ({' '.join(args)}), a few minutes the first time...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        src = _extract_llama_cpp(sdist, Path(tmp) / "src")
        build_dir = Path(tmp) / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        log_path = cache / f"build-{key}.log"
        with log_path.open("w") as log:
            _run_step([cmake, "-S", str(src), "-B", str(build_dir), *generator, *args], log, log_path)
            compile_ = [cmake, "--build", str(build_dir), "--target", "llama-server", "--config", "Release"]
            _run_step([*compile_, "-j", str(jobs)], log, log_path)
        built = next((p for p in build_dir.rglob(BINARY) if p.is_file()), None)
        if built is None:
            raise BuildError(f"the build made no {BINARY}; the build log is {log_path}")
        staging = Path(tmp) / "out"
        staging.mkdir()
        shutil.copy2(built, staging / BINARY)
        facts = {
            "cmake_args": args,
            "compiler": compiler,
            "source": f"{SOURCE_PACKAGE} {SOURCE_VERSION}",
            "seconds": round(time.monotonic() - started, 1),
        }
        (staging / "build.json").write_text(json.dumps(facts, indent=2))
        os.replace(staging, out_dir)  # a cache entry appears whole or not at all
    print(f"Built llama-server in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binary


def _run_step(argv: list[str], log: IO[str], log_path: Path) -> None:
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    if subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        raise BuildError(f"building llama-server failed; the build log is {log_path}")


def install(binary: Path, bin_dir: Path) -> Path:
    """Copy the binary beside the interpreter (atomically: a running engine keeps its old copy)."""
    target = bin_dir / BINARY
    partial = bin_dir / f".{BINARY}.partial"
    shutil.copyfile(binary, partial)  # a fresh mtime: make compares it with build.py's
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kamiwaza_cli.server.engines.build", description=__doc__)
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--print-flags", action="store_true", help="print the CMake arguments for this machine")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent, help="where to put llama-server (default: bin/)"
    )
    opts = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        if opts.print_flags:
            print(shlex.join(cmake_args(Machine.this(), env)))
            return 0
        if env.get("KAMIWAZA_LLAMA_SERVER"):
            print(f"Using KAMIWAZA_LLAMA_SERVER={env['KAMIWAZA_LLAMA_SERVER']}; not building one", file=sys.stderr)
            return 0
        target = install(build(Machine.this(), env, opts.jobs), opts.bin_dir)
    except BuildError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"llama-server installed at {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
