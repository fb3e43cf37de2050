"""Render every ``bench/results/*.json`` into docs/benchmarks.md: one table per benchmark.

Each result file has the shape ``{"name", "machine": {...}, "figures": [{"metric", "value",
"baseline", "ratio", "unit", "target", "met", "note"}], "runs"}`` (optional: ``description``,
``conditions``, ``diff`` per figure, ``tables``, ``details``), so a new benchmark only has to write one more file.
A figure's ``met`` is true or false when its target was judged; null for a context figure (target
"— (context)") or when its target could not be judged (e.g. its baseline is missing), shown as "?".
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from .common import REPO_ROOT, RESULTS_DIR

OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"

MACHINE_KEYS = (
    ("cpu", "CPU", ""),
    ("cores", "cores", ""),
    ("ram_gib", "RAM", " GiB"),
    ("os", "OS", ""),
    ("python", "Python", ""),
    ("llama_cpp_python", "llama-cpp-python", ""),
    ("kamiwaza_cli", "kamiwaza-cli", ""),
)


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def with_unit(value: Any, unit: str) -> str:
    text = number(value)
    return text if text == "—" or not unit else f"{text} {unit}"


def ratio_diff(fig: dict[str, Any]) -> str:
    parts = []
    if fig.get("ratio") is not None:
        parts.append(f"×{fig['ratio']:.3f}")
    diff = fig.get("diff")
    if diff is not None:
        sign = "+" if diff >= 0 else "−"
        parts.append(f"({sign}{with_unit(abs(diff), fig.get('unit', ''))})")
    return " ".join(parts) or "—"


def is_context(fig: dict[str, Any]) -> bool:
    return str(fig.get("target") or "—").startswith("—")


def met(fig: dict[str, Any]) -> str:
    value = fig.get("met")
    return "✓" if value is True else "✗" if value is False else "—" if is_context(fig) else "?"


def table(spec: dict[str, Any]) -> list[str]:
    columns = spec.get("columns") or []
    lines = [f"{spec['title']}:", ""] if spec.get("title") else []
    rows = spec.get("rows") or []
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(columns))]
    lines += [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "".join("---:|" if n else "---|" for n in numeric),
    ]
    lines += ["| " + " | ".join(cell(number(v)) for v in row) + " |" for row in rows]
    return lines


def render(result: dict[str, Any]) -> str:
    machine = result.get("machine") or {}
    figures = result.get("figures") or []
    lines = [f"## {result.get('name', 'benchmark')}", ""]
    if result.get("description"):
        lines += [result["description"], ""]
    described = [f"{label} {machine[key]}{suffix}" for key, label, suffix in MACHINE_KEYS if machine.get(key)]
    lines += [
        f"Machine: {', '.join(described) or 'not described'}.  ",
        f"Date: {machine.get('date', 'unknown')}. Each figure is the median of {result.get('runs', '?')} runs.",
        "",
    ]
    if result.get("conditions"):
        lines += [f"Conditions: {result['conditions']}.", ""]
    judged = [f for f in figures if isinstance(f.get("met"), bool)]
    unknown = [f for f in figures if f.get("met") is None and not is_context(f)]
    if judged or unknown:
        lines += [
            f"Targets met: {sum(f['met'] for f in judged)} of {len(judged) + len(unknown)}"
            + (f" ({len(unknown)} not judged: baseline missing, see the notes)" if unknown else "")
            + ".",
            "",
        ]
    lines += [
        "| Metric | Value | Baseline | Ratio (diff) | Target | Met |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for fig in figures:
        unit = fig.get("unit", "")
        lines.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (
                    fig.get("metric", ""),
                    with_unit(fig.get("value"), unit),
                    with_unit(fig.get("baseline"), unit),
                    ratio_diff(fig),
                    fig.get("target") or "—",
                    met(fig),
                )
            )
            + " |"
        )
    for spec in result.get("tables") or []:
        lines += [""] + table(spec)
    notes = [f for f in figures if f.get("note")]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- **{cell(f['metric'])}**: {f['note']}" for f in notes]
    return "\n".join(lines) + "\n"


def main() -> int:
    paths = sorted(RESULTS_DIR.glob("*.json"))
    results = []
    for path in paths:
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
    parts = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from `bench/results/*.json`; do not edit by hand.",
        "",
        "How to reproduce: `make bench` (runs the benchmarks on this machine, then renders this page).",
        "",
    ]
    if not results:
        parts += ["No results yet: run `make bench`.", ""]
    for result in results:
        parts.append(render(result))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n".join(parts).rstrip("\n") + "\n")
    print(f"wrote {OUTPUT.relative_to(REPO_ROOT)} ({len(results)} benchmark(s))", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
