"""docs/cli.md is generated from --help and must stay in step with the CLI (CI fails when stale)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"
DOC = ROOT / "docs" / "cli.md"


def _gen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env or dict(os.environ), capture_output=True, text=True, timeout=60
    )


def test_docs_are_up_to_date() -> None:
    # A narrow terminal and settings in the environment must not change the result.
    env = {**os.environ, "COLUMNS": "60", "KAMIWAZA_BASE_URL": "https://example.invalid/api"}
    r = _gen("--check", env=env)
    assert r.returncode == 0, f"{r.stderr}\ndocs/cli.md is stale: run `make docs` and commit it"


def test_check_names_the_command_that_regenerates(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(DOC.read_text().replace("$ kamiwaza pull --help\n", "$ kamiwaza pull --help\nan old line\n"))
    r = _gen("--check", "--output", str(stale))
    assert r.returncode == 1
    assert "is out of date" in r.stderr and "make docs" in r.stderr
    assert "\n-an old line\n" in r.stderr  # a diff shows what changed

    missing = _gen("--check", "--output", str(tmp_path / "nope.md"))
    assert missing.returncode == 1 and "make docs" in missing.stderr

    assert _gen("--output", str(stale)).returncode == 0  # regenerating fixes it
    assert _gen("--check", "--output", str(stale)).returncode == 0


def test_every_command_has_a_heading_in_order() -> None:
    text = DOC.read_text()
    headings = re.findall(r"^#{2,4} (kamiwaza.*)$", text, re.M)
    assert headings[0] == "kamiwaza"
    for path in ("kamiwaza completion", "kamiwaza pull", "kamiwaza ps", "kamiwaza server start", "kamiwaza stop"):
        assert path in headings
    top = [h for h in headings if h.count(" ") == 1]
    assert top == sorted(top)
    assert "### kamiwaza server start" in text


@pytest.mark.parametrize("path", ["", "pull", "server start"])
def test_blocks_are_what_help_prints(path: str) -> None:
    """Byte for byte the output of `kamiwaza <path> --help` in a 100-column terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAMIWAZA_")}
    r = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", *path.split(), "--help"],
        env={**env, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    command = " ".join(["kamiwaza", *path.split()])
    block = re.search(rf"^\$ {re.escape(command)} --help\n(.*?)\n```$", DOC.read_text(), re.S | re.M)
    assert block is not None
    assert block.group(1) + "\n" == r.stdout


def test_lazy_command_list_matches_each_command_help() -> None:
    """`kamiwaza --help` lists commands without importing them; its lines must not drift from the docstrings."""
    from kamiwaza_cli.cli.main import LAZY_COMMANDS, cli

    ctx = click.Context(cli, info_name="kamiwaza")
    for name, (_module, _attr, summary) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.help is not None, name
        assert command.help.strip().splitlines()[0] == summary, name
