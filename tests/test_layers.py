"""The layer rules of docs/architecture.md, read from the source's imports (no import is executed).

- server/ (the local server process) never imports the client side: cli/, chat/, workflows/,
  platform/, localserver.py.
- platform/sdk.py is the only module that imports the SDK (sdkimport.py names its modules as
  strings and imports none of them).
- workflows/ and platform/ never import cli/ or chat/, and never print: they return records
  and yield progress events for cli/ to render.
- cli/ and chat/ reach the platform only through workflows/ (its re-exports of the port and
  the records), never platform/ or the SDK directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "kamiwaza_cli"
CLIENT_SIDE = ("cli", "chat", "workflows", "platform", "localserver")
# The one print below cli/: the --debug trace of each request the SDK sends (docs/architecture.md,
# known exceptions), written to stderr.
ALLOWED_PRINTS = {"platform/sdk.py": 1}


def _modules(under: str = "") -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


def _dotted(path: Path) -> list[str]:
    return ["kamiwaza_cli", *path.relative_to(PACKAGE).with_suffix("").parts]


def imports_of(path: Path, dotted: list[str] | None = None) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth.
    ``dotted``: the module's own dotted name, when the file is not in the package."""
    package = (dotted or _dotted(path))[:-1]  # for __init__.py too: "__init__" drops, the package stays
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _inside(name: str, *parts: str) -> bool:
    return any(name == f"kamiwaza_cli.{p}" or name.startswith(f"kamiwaza_cli.{p}.") for p in parts)


def test_the_server_never_imports_the_client_side() -> None:
    crossings = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imports_of(path) if _inside(n, *CLIENT_SIDE))
        for path in _modules("server")
    }
    assert {k: v for k, v in crossings.items() if v} == {}


def test_only_the_platform_adapter_imports_the_sdk() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if any(n == "kamiwaza_sdk" or n.startswith("kamiwaza_sdk.") for n in imports_of(path))
    )
    assert importers == ["platform/sdk.py"]


def test_workflows_and_the_platform_never_reach_up_or_print() -> None:
    problems = []
    for path in _modules("workflows") + _modules("platform"):
        where = str(path.relative_to(PACKAGE))
        problems += [f"{where} imports {n}" for n in imports_of(path) if _inside(n, "cli", "chat")]
        prints = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        if len(prints) > ALLOWED_PRINTS.get(where, 0):
            problems.append(f"{where} calls print at lines {prints}")
    assert problems == []


def test_the_import_reader_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    # The rules above are only as good as this reader: a relative import two levels up, one
    # inside a function, and a plain import must all be seen.
    module = tmp_path / "probe.py"
    module.write_text("import os\nfrom ...cli import output\n\ndef f():\n    from ...workflows.models import x\n")
    names = imports_of(module, ["kamiwaza_cli", "server", "routes", "probe"])
    assert {"os", "kamiwaza_cli.cli", "kamiwaza_cli.cli.output", "kamiwaza_cli.workflows.models"} <= names


def test_the_cli_reaches_the_platform_only_through_the_workflows() -> None:
    crossings = {
        str(path.relative_to(PACKAGE)): sorted(
            n for n in imports_of(path) if _inside(n, "platform") or n.split(".")[0] == "kamiwaza_sdk"
        )
        for path in _modules("cli") + _modules("chat")
    }
    assert {k: v for k, v in crossings.items() if v} == {}
