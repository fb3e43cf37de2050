"""How the CLI writes: data to stdout, everything else to stderr, colour only on terminals.

One ``Console`` for each stream, made lazily so ``--help`` doesn't pay for rich.
``NO_COLOR`` and non-TTY streams get plain text with no escape codes.

Everything printed here passes through ``textsafe.safe_text``: names, ids, error details and
logs come from the platform (a hub, a URL, another user) and their control characters must reach
the terminal as visible escapes, never as commands to it. Text handed to rich goes in as ``Text``
or through ``markup()``, so a ``[bold]`` in a model name is printed, not interpreted.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from ..config import no_color as _no_color
from ..textsafe import safe_text

_consoles: dict[str, Any] = {}
quiet = False


def _console(stream: str) -> Any:
    if stream not in _consoles:
        from rich.console import Console

        target = sys.stdout if stream == "out" else sys.stderr
        tty = target.isatty()
        _consoles[stream] = Console(
            file=target,
            stderr=stream == "err",
            no_color=_no_color() or not tty,
            highlight=False,
            soft_wrap=not tty,
            force_terminal=tty or None,
            emoji=tty,
        )
    return _consoles[stream]


def reset() -> None:
    """Forget consoles (CliRunner swaps sys.stdout between invocations)."""
    _consoles.clear()


def err_console() -> Any:
    return _console("err")


def out_console() -> Any:
    return _console("out")


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and not _no_color()


def clean(value: object) -> str:
    """One value made safe to print on one line (control characters as visible escapes)."""
    return safe_text(value)


def markup(value: object) -> str:
    """One value made safe for a rich markup string (progress descriptions, spinner text)."""
    from rich.markup import escape

    return str(escape(safe_text(value)))


def info(message: str) -> None:
    """A status line on stderr (suppressed by --quiet); the blank lines it starts with are kept."""
    if not quiet:
        body = message.lstrip("\n")
        print(message[: len(message) - len(body)] + safe_text(body), file=sys.stderr, flush=True)


def line(text: object = "") -> None:
    """One line of data on stdout, escaped (a newline inside a value cannot start a new line)."""
    print(safe_text(text))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(
    columns: list[str],
    rows: list[list[str]],
    *,
    own_line: str | None = None,
    shrink: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
) -> None:
    """A table on stdout: rich on a terminal (fitted to its width by ``fit_table`` when told how),
    tab-free aligned plain text of whole rows in pipes (scripts read those)."""
    rows = [[safe_text(v).replace("\t", "\\t") for v in r] for r in rows]  # a tab would break the columns
    if sys.stdout.isatty() and (own_line or shrink or drop):
        from rich.text import Text

        console = out_console()
        lines = fit_table(columns, rows, console.width, own_line=own_line, shrink=shrink, drop=drop)
        for i, text in enumerate(lines):
            # Text, not markup: cells are data. Never folded by rich: a long endpoint stays one
            # string the terminal wraps, so it can be copied whole.
            console.print(Text(text, style="bold" if i == 0 else ""), no_wrap=True, overflow="ignore", crop=False)
        return
    if sys.stdout.isatty():
        from rich.table import Table
        from rich.text import Text

        t = Table(box=None, pad_edge=False, header_style="bold")
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*(Text(v) for v in r))  # Text, not str: cells are data, never markup
        out_console().print(t)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    for line in [columns, *rows]:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=False)).rstrip() + "\n")
    sys.stdout.flush()


GAP = 2
MIN_SHRUNK = 12  # a shortened column keeps at least this many characters (ellipsis included)


def fit_table(
    columns: list[str],
    rows: list[list[str]],
    width: int,
    *,
    own_line: str | None = None,
    shrink: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
) -> list[str]:
    """The lines of a table no wider than ``width``, by these steps until it fits: the ``own_line``
    column moves under its row (indented, whole, however long); the ``shrink`` columns are cut
    (with "…") down to ``MIN_SHRUNK``; the ``drop`` columns go, in their order. What still does
    not fit is printed anyway (the terminal wraps it)."""
    from rich.cells import cell_len  # what a terminal gives a character (an emoji takes two)

    keep = list(range(len(columns)))
    below: int | None = None

    def widths() -> dict[int, int]:
        return {i: max([cell_len(columns[i]), *(cell_len(r[i]) for r in rows)]) for i in keep}

    def total(ws: dict[int, int]) -> int:
        return sum(ws.values()) + GAP * (len(ws) - 1)

    ws = widths()
    if total(ws) > width and own_line in columns:
        below = columns.index(own_line)
        keep.remove(below)
    base = list(keep)
    # The fewest columns dropped that fit once the shrinkable ones are cut; all of them dropped at worst.
    for dropped in range(len(drop) + 1):
        keep = [i for i in base if columns[i] not in drop[:dropped]]
        ws = widths()
        for name in shrink:
            i = columns.index(name) if name in columns else -1
            if total(ws) > width and i in keep:
                ws[i] = max(MIN_SHRUNK, cell_len(columns[i]), ws[i] - (total(ws) - width))
        if total(ws) <= width:
            break

    def cell(value: str, i: int) -> str:
        if cell_len(value) > ws[i]:
            value = value[: ws[i] - 1] + "…"
        return value + " " * (ws[i] - cell_len(value))

    lines = ["  ".join(cell(columns[i], i) for i in keep).rstrip()]
    for r in rows:
        lines.append("  ".join(cell(r[i], i) for i in keep).rstrip())
        if below is not None and r[below] not in ("", "-"):
            lines.append(f"  {r[below]}")
    return lines


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def ago(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, span in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= span:
            n = seconds // span
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
