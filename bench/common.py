"""Helpers shared by the benchmarks: machine description, SSE timing, polling, figures and result files.

Every benchmark writes one ``bench/results/<name>.json`` with the same shape
(``name``, ``machine``, ``figures``, ``runs``, optional ``description``, ``conditions``, ``tables``,
``details``); ``bench.report``
renders them all into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama_cpp_python": _version("llama_cpp_python"),
        "kamiwaza_cli": _version("kamiwaza-cli") or _version("kamiwaza_cli"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.01, what: str = "condition") -> float:
    """Call ``check`` every ``interval`` s until it is true; return the seconds it took."""
    start = time.perf_counter()
    while True:
        if check():
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s")
        time.sleep(interval)


def http_ok(client: httpx.Client, url: str, timeout: float = 1.0) -> bool:
    """GET answers 200. Reuse one client: ``httpx.get`` builds an SSL context each call (~28 ms of CPU),
    which, polled every 10 ms, would steal a core from the engine it is waiting for."""
    try:
        return client.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_busy_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _TICK, steal / _TICK


def _tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants, reaped children included (cutime/cstime)."""
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            rest = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(rest[1])
        cpu[pid] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in cpu]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return sum(cpu[p] for p in seen) / _TICK


class CpuMeter:
    """How much CPU the rest of the machine used while we measured: other people's tests, builds...

    ``foreign`` = machine busy time - the CPU time of our process trees (this process and the
    local server, engines included), as a fraction of one core over the wall time. Measurements
    taken while the 2-core machine was busy with something else are retried.
    """

    def __init__(self, roots: Callable[[], list[int]], max_foreign: float = 0.10, settle_timeout: float = 20.0) -> None:
        self.roots = roots
        self.max_foreign = max_foreign
        self.settle_timeout = settle_timeout

    def _snapshot(self) -> tuple[float, float, float, float]:
        busy, steal = _system_busy_s()
        return time.perf_counter(), busy, steal, _tree_cpu_s(self.roots())

    def _foreign(self, a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        wall = max(b[0] - a[0], 1e-6)
        return max(0.0, ((b[1] - a[1]) - (b[3] - a[3]) + (b[2] - a[2])) / wall)

    def settle(self, window: float = 0.3) -> float:
        """Wait until the rest of the machine is quiet for one window; return the last foreign fraction."""
        deadline = time.perf_counter() + self.settle_timeout
        while True:
            a = self._snapshot()
            time.sleep(window)
            foreign = self._foreign(a, self._snapshot())
            if foreign < self.max_foreign / 2 or time.perf_counter() > deadline:
                return foreign

    def run(self, fn: Callable[[], Any], attempts: int = 4) -> tuple[Any, dict[str, Any]]:
        """``fn()`` on a quiet machine: retried (up to ``attempts``) when something else took CPU meanwhile;
        if it never was quiet enough, the attempt disturbed least is kept."""
        history: list[float] = []
        best: tuple[float, Any] | None = None
        for _ in range(attempts):
            self.settle()
            a = self._snapshot()
            result = fn()
            foreign = self._foreign(a, self._snapshot())
            history.append(round(foreign, 3))
            if best is None or foreign < best[0]:
                best = (foreign, result)
            if foreign <= self.max_foreign:
                break
        assert best is not None
        return best[1], {"foreign_cpu": history, "kept": round(best[0], 3), "retried": len(history) - 1}


@dataclass
class Stream:
    """One streamed chat completion, timed on arrival of each SSE event."""

    ttft: float  # s from sending the request to the first event with non-empty content
    tokens_per_s: float  # content events after the first / (t_last - t_first); nan with a single event
    content_events: int
    text: str
    arrivals: list[float] = field(repr=False)  # s since the request, one per content event
    finish_reason: str | None = None

    def gaps_ms(self) -> list[float]:
        return [(b - a) * 1000 for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


def stream_chat(client: httpx.Client, base_url: str, body: dict[str, Any]) -> Stream:
    """POST ``{base_url}/chat/completions`` with ``stream: true`` and time every content event."""
    arrivals: list[float] = []
    text: list[str] = []
    finish = None
    start = time.perf_counter()
    with client.stream("POST", f"{base_url}/chat/completions", json={**body, "stream": True}) as resp:
        if resp.status_code != 200:
            resp.read()
            raise RuntimeError(f"{base_url}: HTTP {resp.status_code}: {resp.text[:300]}")
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            now = time.perf_counter()
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choice = (json.loads(data).get("choices") or [{}])[0]
            finish = choice.get("finish_reason") or finish
            content = (choice.get("delta") or {}).get("content")
            if content:
                arrivals.append(now - start)
                text.append(content)
    if not arrivals:
        raise RuntimeError(f"{base_url}: the stream had no content events; cannot time it")
    span = arrivals[-1] - arrivals[0]
    return Stream(
        ttft=arrivals[0],
        tokens_per_s=(len(arrivals) - 1) / span if span > 0 else float("nan"),
        content_events=len(arrivals),
        text="".join(text),
        arrivals=arrivals,
        finish_reason=finish,
    )


def figure(
    metric: str,
    value: float,
    baseline: float,
    unit: str,
    target: str,
    met: bool,
    note: str = "",
    digits: int = 3,
    ratio: float | None = None,
    diff: float | None = None,
) -> dict[str, Any]:
    """One row of a result. ``ratio`` defaults to value / baseline and ``diff`` to value - baseline (in ``unit``);
    pass paired statistics (e.g. the median of per-run ratios) instead when the runs are paired."""
    return {
        "metric": metric,
        "value": round(value, digits),
        "baseline": round(baseline, digits),
        "ratio": round(ratio if ratio is not None else value / baseline, 4) if baseline else None,
        "diff": round(diff if diff is not None else value - baseline, digits),
        "unit": unit,
        "target": target,
        "met": bool(met),
        "note": note,
    }


def write_result(
    name: str,
    figures: list[dict[str, Any]],
    runs: int,
    details: dict[str, Any] | None = None,
    description: str = "",
    conditions: str = "",
    tables: list[dict[str, Any]] | None = None,
) -> Path:
    """``tables``: extra tables for the report, each ``{"title", "columns": [...], "rows": [[...], ...]}``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data: dict[str, Any] = {"name": name, "machine": machine(), "figures": figures, "runs": runs}
    if description:
        data["description"] = description
    if conditions:
        data["conditions"] = conditions
    if tables:
        data["tables"] = tables
    if details:
        data["details"] = details
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
