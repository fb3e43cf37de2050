"""Output fits the terminal: the pull progress and the ps table at 60, 80 and 120 columns, drawn by
the real rich console of the CLI at that width (a real terminal for ps: tests/test_engine_serving.py)."""

from __future__ import annotations

import io

import pytest
from rich.cells import cell_len
from rich.console import Console

from kamiwaza_cli import workflows
from kamiwaza_cli.cli import output
from kamiwaza_cli.cli.output import Environment, Output
from kamiwaza_cli.cli.progress import PullView

LONG = "Qwen2.5-Coder-32B-Instruct-Q4_K_M-00001-of-00005.gguf"
SHORT = "gemma-3-270m-it-Q4_K_M.gguf"
ENDPOINT = "http://127.0.0.1:7777/runtime/models/6f1c1f43-0d52-4a3e-9f33-3f7e2f7f2a10/v1"
COLUMNS = ["MODEL", "ID", "STATUS", "ENGINE", "SLOTS×CTX", "ENDPOINT", "UPTIME"]
ROWS = [
    ["qwen2.5-coder-32b-instruct-q4_k_m", "6f1c1f43", "● RUNNING", "llamacpp", "4×8192", ENDPOINT, "1h 2m"],
    ["gemma-3-270m-q4_k_m", "0a01e5ae", "✖ FAILED", "llamacpp", "4×2048", "MODEL_LOADING_FAILURE", "-"],
]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_pull_progress_is_one_line_a_file_within_the_width(width: int) -> None:
    streams = io.StringIO(), io.StringIO(), io.StringIO()
    terminal = Environment(*streams, True, True, True, width=width)
    files = [
        workflows.FileProgress("a", LONG, 7_300_000_000, 19_851_000_000, "downloading", speed=12.5e6, eta=900),
        workflows.FileProgress("b", SHORT, 120_000_000, 253_113_024, "downloading", speed=3e6, eta=40),
    ]
    view = PullView(Output(terminal))
    view.start(workflows.PullStarted("m", "org/m", files))
    try:
        shown = Console(file=io.StringIO(), width=width, record=True)
        shown.print(view.progress.get_renderable())
        lines = shown.export_text().splitlines()
    finally:
        view.stop()
    assert len(lines) == 2, lines  # one line a file: nothing wrapped
    assert all(cell_len(line) <= width for line in lines), lines
    assert "37%" in lines[0] and "7.3/19.9 GB" in lines[0] and "47%" in lines[1]
    assert LONG[: {60: 13, 80: 23, 120: 39}[width]] + "…" in lines[0]  # the long name cut, not wrapped
    assert ("-:--:--" in lines[0]) == (width >= 80)  # the time left, where there is room


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_ps_table_fits_with_the_endpoint_whole_on_its_own_line(width: int) -> None:
    lines = output.fit_table(COLUMNS, ROWS, width, own_line="ENDPOINT", shrink=("MODEL",), drop=("ENGINE", "UPTIME"))
    table = [ln for ln in lines if not ln.startswith("  ")]
    assert all(cell_len(ln) <= width for ln in table), lines
    assert f"  {ENDPOINT}" in lines and lines.index(f"  {ENDPOINT}") == 2  # under its own row, whole
    assert "ENDPOINT" not in lines[0] and "SLOTS×CTX" in lines[0] and "● RUNNING" in lines[1]
    # Shorter names first, then fewer columns (the name gets back what they left).
    name = {60: "qwen2.5-coder-32b-i…", 80: "qwen2.5-coder-32b-instruct-q4…", 120: ROWS[0][0]}[width]
    assert lines[1].startswith(name + " ") and ("ENGINE" in lines[0]) == (width >= 80)
    wide = output.fit_table(COLUMNS, ROWS, 400, own_line="ENDPOINT")
    assert len(wide) == 3 and ENDPOINT in wide[1]  # room enough: one line a row, as before
