"""Start-up benchmark: the wall time of short ``kamiwaza`` commands against the interpreter's own costs.

Measures, hyperfine-like (stdout and stderr to /dev/null, ``BENCH_RUNS`` runs of every command,
interleaved round-robin with a rotating start, after two warm-up runs each):

- ``kamiwaza --help`` and ``kamiwaza config show`` against ``python -c "import click, rich"``;
- ``kamiwaza list`` and ``kamiwaza ps`` against ``python -c "import kamiwaza_sdk"``, on a real
  local server (temp ``KAMIWAZA_HOME``, free port, reached the default way: no ``--url``) with the
  small gemma model pulled and deployed, so both commands have a row to print;
- every command also against ``python -c pass`` and the other baseline (in the notes);
- for context (no target), the same commands of two peer CLIs installed from PyPI into
  ``bench/.venv-peers`` (created when missing): ``ramalama --help``, ``ramalama list``, ``llm --help``,
  ``llm models list``.

Every command uses the same interpreter (the venv's python; the peers' venv is made from its base).
Bytecode is cached (see ``harness.bytecode_env``). Measurements during which other processes used
more than 10% of a core are retried.

Run: ``python -m bench.startup`` (writes bench/results/startup.json), then ``python -m bench.report``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import BENCH_DIR, REPO_ROOT, figure, log, median, write_result
from .harness import (
    KAMIWAZA,
    MODEL_NAME,
    PYTHON,
    BudgetMeter,
    background_summary,
    bytecode_env,
    conditions_text,
    context_figure,
    model_file,
    rotate,
    run_checked,
    run_timed,
    venv_install,
    venv_version,
)
from .serving import LocalServer

# 20 runs: the SDK import alone swings 1.2-2.0 s between runs here, and list/ps are judged by it.
RUNS = int(os.environ.get("BENCH_STARTUP_RUNS", "20"))
WARMUP = 2
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "420"))  # measuring time before retries stop
PEERS_VENV = BENCH_DIR / ".venv-peers"
PEERS = ("ramalama", "llm")

HELP_RATIO_TARGET = 2.0
# list and ps use the SDK but not openai, which the SDK imports eagerly: kamiwaza_cli/sdkimport.py
# defers it (and the SDK's services the CLI never calls) until first use.
SDK_RATIO_TARGET = 0.6

DESCRIPTION = (
    "Wall time of short `kamiwaza` commands (the venv's `kamiwaza` script, output to /dev/null) against the "
    'interpreter\'s own costs measured in the same run: `python -c pass`, `python -c "import click, rich"` and '
    '`python -c "import kamiwaza_sdk"`. `list` and `ps` talk to a real local server (the default platform, '
    "no `--url`) with the small gemma model pulled and deployed. The CLIs `ramalama` and `llm` (from PyPI, in "
    "`bench/.venv-peers`, same interpreter) are timed alongside for context. Commands are interleaved "
    "round-robin after two warm-up runs each; bytecode is cached as on an installed CLI; measurements during "
    "which other processes used more than 10% of a core are retried (`bench/startup.py`)."
)


def ensure_peers() -> dict[str, str | None]:
    """Install ramalama and llm into bench/.venv-peers if missing; returns name -> problem (None when usable)."""
    problems: dict[str, str | None] = {}
    for name in PEERS:
        command = PEERS_VENV / "bin" / name
        problem = None if command.exists() else venv_install(PEERS_VENV, name)
        problems[name] = problem or (None if command.exists() else f"pip install {name} installed no `{name}`")
    return problems


def main() -> int:
    peer_problems = ensure_peers()
    gguf = model_file()
    with tempfile.TemporaryDirectory(prefix="kamiwaza-bench-startup-") as tmp:
        tmpdir = Path(tmp)
        server = LocalServer(tmpdir / "home")
        log(f"startup benchmark: {RUNS} runs, local server on port {server.port}, KAMIWAZA_HOME={server.home}")
        server.start()
        meter = BudgetMeter(lambda: [p for p in (os.getpid(), server.pid()) if p], time.perf_counter() + BUDGET_S)
        try:
            server.cli("pull", str(gguf))
            server.cli("serve", MODEL_NAME, "--json")
            env = bytecode_env(server.env)
            env.pop("KAMIWAZA_BASE_URL", None)
            # The peers keep their state in the temp dir, never in the user's home.
            peer_home = tmpdir / "peer-home"
            peer_home.mkdir()
            peer_env = {**env, "HOME": str(peer_home), "LLM_USER_PATH": str(peer_home / "llm")}
            store = str(peer_home / "ramalama-store")
            commands: dict[str, tuple[list[str], dict[str, str]]] = {
                "python -c pass": ([PYTHON, "-c", "pass"], env),
                "import click, rich": ([PYTHON, "-c", "import click, rich"], env),
                "import kamiwaza_sdk": ([PYTHON, "-c", "import kamiwaza_sdk"], env),
                "kamiwaza --help": ([KAMIWAZA, "--help"], env),
                "kamiwaza config show": ([KAMIWAZA, "config", "show"], env),
                "kamiwaza list": ([KAMIWAZA, "list"], env),
                "kamiwaza ps": ([KAMIWAZA, "ps"], env),
            }
            peer_notes: dict[str, str] = {}
            ram = str(PEERS_VENV / "bin" / "ramalama")
            llm = str(PEERS_VENV / "bin" / "llm")
            if peer_problems.get("ramalama") is None:
                # No container engine runs on these machines (docker is installed, its daemon is not):
                # plain `ramalama list` fails, so both ramalama commands run with --nocontainer.
                try:
                    run_checked([ram, "--nocontainer", "--store", store, "pull", gguf.as_uri()], peer_env)
                    commands["ramalama --help"] = ([ram, "--help"], peer_env)
                    commands["ramalama list"] = ([ram, "--nocontainer", "--store", store, "list"], peer_env)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    peer_problems["ramalama"] = f"ramalama could not register the model: {exc}"
            if peer_problems.get("llm") is None:
                commands["llm --help"] = ([llm, "--help"], peer_env)
                commands["llm models list"] = ([llm, "models", "list"], peer_env)

            # Check once that each command does what it is timed for, then warm caches up.
            listing = run_checked([KAMIWAZA, "list"], env, cwd=tmp).stdout
            ps_out = run_checked([KAMIWAZA, "ps"], env, cwd=tmp).stdout
            if MODEL_NAME not in listing or "RUNNING" not in ps_out:
                raise RuntimeError(f"unexpected output: list={listing!r} ps={ps_out!r}")
            if "ramalama list" in commands:
                listed = run_checked(commands["ramalama list"][0], peer_env, cwd=tmp).stdout
                peer_notes["ramalama"] = "one model registered" if "gemma" in listed else "empty store"
            log("warm-up: " + ", ".join(commands))
            for _ in range(WARMUP):
                for argv, cmd_env in commands.values():
                    run_timed(argv, cmd_env, cwd=tmp)

            meter.deadline = time.perf_counter() + BUDGET_S  # the budget is for measuring, not set-up
            samples: dict[str, list[float]] = {name: [] for name in commands}
            noise: dict[str, list[Any]] = {name: [] for name in commands}
            for run in range(RUNS):
                for name in rotate(list(commands), run):
                    argv, cmd_env = commands[name]
                    seconds, info = meter.run(functools.partial(run_timed, argv, cmd_env, cwd=tmp))
                    samples[name].append(seconds)
                    noise[name].append(info)
                log(f"  run {run + 1}/{RUNS}: " + ", ".join(f"{n} {samples[n][-1] * 1000:.0f} ms" for n in commands))
        finally:
            server.stop()
    figures, details = build_figures(samples, peer_problems, peer_notes)
    details["background_cpu"] = background = background_summary(noise, meter)
    description = DESCRIPTION
    missing = {p: why for p, why in peer_problems.items() if why}
    if missing:
        description += (
            " Not measured (could not be installed or run): "
            + "; ".join(f"{p}: {why}" for p, why in missing.items())
            + "."
        )
    out = write_result("startup", figures, RUNS, details, description, conditions_text(background))
    for f in figures:
        mark = "met" if f["met"] else ("context" if f["met"] is None else "MISSED")
        log(f"{f['metric']}: {f['value']} {f['unit']} vs {f['baseline']} (ratio {f['ratio']}, diff {f['diff']}) {mark}")
    log(f"wrote {out.relative_to(REPO_ROOT)}")
    return 0


def build_figures(
    samples: dict[str, list[float]], peer_problems: dict[str, str | None], peer_notes: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    med = {name: median(v) for name, v in samples.items()}

    def paired_ratio(a: str, b: str) -> float:
        return median([x / y for x, y in zip(samples[a], samples[b], strict=True)])

    def paired_diff(a: str, b: str) -> float:
        return median([x - y for x, y in zip(samples[a], samples[b], strict=True)])

    def others(name: str, *baselines: str) -> str:
        return "; ".join(
            f"vs `{b}` ({med[b] * 1000:.0f} ms): ×{paired_ratio(name, b):.2f}, {paired_diff(name, b) * 1000:+.0f} ms"
            for b in baselines
        )

    spread = {n: (max(v) - min(v)) * 1000 for n, v in samples.items()}
    figures = []
    for name in ("kamiwaza --help", "kamiwaza config show"):
        ratio = paired_ratio(name, "import click, rich")
        figures.append(
            figure(
                f"`{name}` wall time",
                med[name] * 1000,
                med["import click, rich"] * 1000,
                "ms",
                f"<= {HELP_RATIO_TARGET:g}x `import click, rich`",
                ratio <= HELP_RATIO_TARGET,
                f'baseline `python -c "import click, rich"`; ratio = median of the {RUNS} per-run ratios, diff = '
                f"median of the per-run differences; {others(name, 'python -c pass', 'import kamiwaza_sdk')}; "
                f"max - min over the runs {spread[name]:.0f} ms",
                digits=1,
                ratio=ratio,
                diff=paired_diff(name, "import click, rich") * 1000,
            )
        )
    for name in ("kamiwaza list", "kamiwaza ps"):
        ratio = paired_ratio(name, "import kamiwaza_sdk")
        what = "one model pulled" if name.endswith("list") else "one deployment running"
        figures.append(
            figure(
                f"`{name}` wall time",
                med[name] * 1000,
                med["import kamiwaza_sdk"] * 1000,
                "ms",
                f"<= {SDK_RATIO_TARGET:g}x `import kamiwaza_sdk`",
                ratio <= SDK_RATIO_TARGET,
                f'against the local server, {what}; baseline `python -c "import kamiwaza_sdk"` (which imports '
                f"openai; the CLI defers it: sdkimport.py); ratio = median of the {RUNS} per-run ratios, diff = "
                f"median of the per-run differences; {others(name, 'python -c pass', 'import click, rich')}; "
                f"max - min over the runs {spread[name]:.0f} ms",
                digits=1,
                ratio=ratio,
                diff=paired_diff(name, "import kamiwaza_sdk") * 1000,
            )
        )
    for name, base in (("import click, rich", "python -c pass"), ("import kamiwaza_sdk", "python -c pass")):
        figures.append(
            context_figure(
                figure(
                    f'`python -c "{name}"` wall time',
                    med[name] * 1000,
                    med[base] * 1000,
                    "ms",
                    "",
                    True,
                    f"the baselines themselves, against the bare interpreter (`python -c pass`); max - min over the "
                    f"runs {spread[name]:.0f} ms",
                    digits=1,
                    ratio=paired_ratio(name, base),
                    diff=paired_diff(name, base) * 1000,
                )
            )
        )
    counterpart = {
        "ramalama --help": "kamiwaza --help",
        "ramalama list": "kamiwaza list",
        "llm --help": "kamiwaza --help",
        "llm models list": "kamiwaza list",
    }
    versions = {p: venv_version(PEERS_VENV, p) for p in PEERS if peer_problems.get(p) is None}
    for name, ours in counterpart.items():
        if name not in samples:
            continue
        peer = name.split()[0]
        how = ""
        if peer == "ramalama":
            how = (
                " Run as `ramalama --nocontainer list` (no container engine runs here; plain `ramalama list` fails "
                f"asking the docker daemon), with the same gemma GGUF registered ({peer_notes.get('ramalama', '?')})."
                if name.endswith("list")
                else ""
            )
        elif name.endswith("list"):
            how = " Lists llm's built-in OpenAI models (no plugin installed; no server involved)."
        figures.append(
            context_figure(
                figure(
                    f"`{name}` wall time ({peer} {versions.get(peer) or '?'})",
                    med[name] * 1000,
                    med["python -c pass"] * 1000,
                    "ms",
                    "",
                    True,
                    f"peer CLI for context, baseline `python -c pass`; {others(name, 'import click, rich')}; "
                    f"`{ours}` took {med[ours] * 1000:.0f} ms in the same runs (×{paired_ratio(ours, name):.2f} of "
                    f"{peer}).{how}",
                    digits=1,
                    ratio=paired_ratio(name, "python -c pass"),
                    diff=paired_diff(name, "python -c pass") * 1000,
                )
            )
        )
    details = {
        "runs": RUNS,
        "warmup_runs": WARMUP,
        "samples_ms": {n: [round(v * 1000, 2) for v in vs] for n, vs in samples.items()},
        "median_ms": {n: round(v * 1000, 2) for n, v in med.items()},
        "peers": {p: {"version": versions.get(p), "problem": peer_problems.get(p)} for p in PEERS},
        "environment": "PYTHONDONTWRITEBYTECODE unset, PYTHONPYCACHEPREFIX=bench/.cache/pycache",
    }
    return figures, details


if __name__ == "__main__":
    sys.exit(main())
