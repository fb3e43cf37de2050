"""Reliability figures for the report: runs the suite under tests/reliability/ and counts what held.

The suite itself is the proof (it runs in CI: faults, load, bad input, security, each asserting what
a user would see); this module runs it once more with pytest's JUnit XML and the tests' own
measurements (``reliability.support.record``: load errors, memory and fd growth, seconds to FAILED,
orphans) and turns both into rows of docs/benchmarks.md: per part, cases passed of cases tried.

Run: ``python -m bench.reliability`` (writes bench/results/reliability.json), then ``python -m bench.report``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, figure, log, write_result

SUITE = "tests/reliability"
RECORD_ENV = "KAMIWAZA_RELIABILITY_RECORD"  # the same name as tests/reliability/support.py's
BAD_INPUT_MIN_CASES = 30
MB = 1 << 20

# module -> (row title, target)
PARTS = {
    "test_faults": ("faults survived (kill -9 of server and engine, disk full, silent platform)", "all pass"),
    "test_load": ("load held (1000 mixed API calls at 32 clients, 4 concurrent chats, no growth)", "all pass"),
    "test_bad_input_matrix": ("bad-input cases (every command and route)", f"all pass, >= {BAD_INPUT_MIN_CASES}"),
    "test_security": ("security checks (API key, loopback, no shell strings, 0600 secrets)", "all pass"),
    "test_security_http": (
        "attacks on the HTTP front (DNS rebinding Host, foreign Origin, 1 MiB header, 60 MB unauthenticated body, "
        "slow clients, connection flood)",
        "all pass",
    ),
    "test_security_downloads": (
        "hostile hubs and URLs (colliding names, oversized and endless bodies, disk reserve, slow URLs, leaky errors)",
        "all pass",
    ),
    "test_security_admission": (
        "admission control (memory check, engine cap, context bound, disconnect cancels)",
        "all pass",
    ),
    "test_security_secrets": (
        "secrets and terminals (key never in argv, blank keys, 0700/0600, login throttle, escape codes)",
        "all pass",
    ),
}

DESCRIPTION = (
    "The reliability suite (`tests/reliability/`, also run by `make test` in CI) run once more by "
    "`bench/reliability.py`: real local servers on free ports, the real CLI, real llama.cpp engines with the small "
    "gemma model, `kill -9`, a tmpfs filled during a download, a port that accepts and never answers. Each row "
    "counts the test cases of one part that passed, of those tried; the notes carry what the tests measured."
)


def run_suite(junit: Path, records: Path) -> tuple[int, float]:
    env = {**os.environ, RECORD_ENV: str(records)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", SUITE]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else f"pytest exited {proc.returncode}")
    return proc.returncode, time.monotonic() - start


def outcomes(junit: Path) -> dict[str, dict[str, list[str]]]:
    """module -> {"passed" | "failed" | "skipped": [test ids]} from pytest's JUnit XML."""
    parts: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        if case.find("skipped") is not None:
            state = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            state = "failed"
        else:
            state = "passed"
        parts[module][state].append(case.get("name", "?"))
    return parts


def measured(records: Path) -> dict[str, dict[str, Any]]:
    if not records.exists():
        return {}
    rows = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    return {row.pop("name"): row for row in rows}


def note_for(module: str, facts: dict[str, dict[str, Any]], states: dict[str, list[str]]) -> str:
    parts = []
    if module == "test_load" and "load" in facts:
        load = facts["load"]
        parts.append(
            f"{load['calls']} calls at {load['clients']} clients: {load['errors']} errors; server RSS "
            f"{load['rss_growth_mb']:+.1f} MB and {load['fd_growth']:+d} open files across the run"
        )
    if module == "test_load" and "chats" in facts:
        chats = facts["chats"]
        parts.append(f"{chats['completed']} of {chats['started']} concurrent chats completed in {chats['seconds']} s")
    if module == "test_faults":
        if "engine_killed" in facts:
            parts.append(f"killed engine FAILED after {facts['engine_killed']['failed_after_s']} s (limit 5 s)")
        if "server_killed" in facts:
            killed = facts["server_killed"]
            parts.append(
                f"server kill -9: {killed['restored']} of {killed['deployments']} deployments restored, "
                f"{killed['orphans']} orphan engines"
            )
        if "download_resume" in facts:
            resume = facts["download_resume"]
            parts.append(
                f"download killed at {resume['killed_at_bytes'] / 1e6:.1f} of {resume['file_bytes'] / 1e6:.1f} MB "
                f"resumed from byte {resume['resumed_from']:,}, {resume['rows']} file row"
            )
    if module == "test_bad_input_matrix":
        tried = [name for names in states.values() for name in names]
        routes = sum(1 for name in tried if name.startswith("test_route"))
        parts.append(
            f"{routes} API routes (status and error body) and {len(tried) - routes} CLI commands (exit code, one "
            "error line naming the next step); each also checks that nothing was written"
        )
    if module == "test_security_http":
        if "http_header_flood" in facts:
            flood = facts["http_header_flood"]
            parts.append(
                f"a {flood['header_bytes'] // MB} MiB header got 431 while {flood['pings']} pings answered in at most "
                f"{flood['max_ping_ms']} ms (limit 100)"
            )
        if "http_unauthenticated_body" in facts:
            body = facts["http_unauthenticated_body"]
            parts.append(
                f"{body['sent_mb']} MB sent of a 60 MB unauthenticated body: 401, server RSS "
                f"{body['rss_growth_mb']:+.1f} MB (limit +10)"
            )
    if module == "test_security_downloads":
        if "hostile_body_stopped" in facts:
            stopped = facts["hostile_body_stopped"]
            parts.append(
                f"a body past its declared {stopped['declared'] / MB:.2f} MiB ({stopped['case']}) stopped after "
                f"{stopped['served'] / MB:.2f} MiB served"
            )
        if "slow_urls_catalog" in facts:
            slow = facts["slow_urls_catalog"]
            parts.append(
                f"{slow['pulls']} pulls of {slow['urls']} slow URLs: GET /models/ at most {slow['worst_ms']} ms "
                "(limit 100)"
            )
    if module == "test_security_admission":
        if "admission: concurrent over-memory deploys" in facts:
            both = facts["admission: concurrent over-memory deploys"]
            parts.append(f"2 concurrent over-memory deploys: {both['accepted']} accepted, {both['refused']} refused")
        if "admission: next request after a disconnect" in facts:
            after = facts["admission: next request after a disconnect"]
            parts.append(
                f"first token after a client hung up: {after['first_token_s']:.2f} s (idle engine "
                f"{after['idle_first_token_s']:.2f} s)"
            )
    if states.get("failed"):
        parts.append("FAILED: " + ", ".join(states["failed"]))
    if states.get("skipped"):
        parts.append("skipped: " + ", ".join(states["skipped"]))
    return "; ".join(parts)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kamiwaza-bench-reliability-") as tmp:
        junit, records = Path(tmp) / "junit.xml", Path(tmp) / "records.jsonl"
        log(f"reliability: pytest {SUITE}")
        code, seconds = run_suite(junit, records)
        if not junit.exists():
            log(f"pytest wrote no report (exit {code})")
            return 1
        results = outcomes(junit)
        facts = measured(records)
    figures = []
    for module, (title, target) in PARTS.items():
        states = results.get(module, {})
        passed, tried = len(states.get("passed", [])), sum(len(v) for v in states.values())
        enough = tried >= BAD_INPUT_MIN_CASES if module == "test_bad_input_matrix" else tried > 0
        met = enough and passed == tried
        figures.append(figure(title, passed, tried, "cases", target, met, note_for(module, facts, states), digits=0))
    details = {"pytest_exit": code, "suite_seconds": round(seconds, 1), "measured": facts}
    path = write_result("reliability", figures, 1, details, DESCRIPTION, f"the suite took {seconds:.0f} s")
    for fig in figures:
        log(f"{fig['metric']}: {fig['value']} of {fig['baseline']} {'met' if fig['met'] else 'MISSED'}  {fig['note']}")
    log(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
