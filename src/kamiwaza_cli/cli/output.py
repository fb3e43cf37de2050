"""How the CLI writes: one ``Output`` per command, over one ``Environment``.

``Environment`` is everything a command touches outside itself (as httpie's is): the three
streams, whether each is a terminal, and the colour setting. It is taken from the process once,
when the command group starts, or handed in by a test (``ctx.meta[ENVIRONMENT]``); commands never
read ``sys.stdout`` or ``isatty()`` themselves, so CLI tests need no global patching.

``Output`` is the one place a command hands its result to. Its mode is ``human`` (tables and
sentences), ``json`` (``--json``: the result as JSON on stdout, nothing else there) or ``quiet``
(``-q``: data only, no status lines). Data goes to stdout, everything else to stderr, colour only on
terminals; consoles are made lazily so ``--help`` doesn't pay for rich.

Everything printed here passes through ``textsafe.safe_text``: names, ids, error details and
logs come from the platform (a hub, a URL, another user) and their control characters must reach
the terminal as visible escapes, never as commands to it. Text handed to rich goes in as ``Text``
or through ``markup()``, so a ``[bold]`` in a model name is printed, not interpreted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

import click

from ..config import no_color as _no_color
from ..textsafe import safe_text

ENVIRONMENT = "kamiwaza.environment"
"""Key in ``click.Context.meta`` of an ``Environment`` the commands use instead of the process's."""


@dataclass
class Environment:
    """The streams a command reads and writes, whether each is a terminal, and the colour setting."""

    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]
    stdin_isatty: bool
    stdout_isatty: bool
    stderr_isatty: bool
    no_color: bool = False
    width: int | None = None  # the terminal's columns; None: asked of the terminal (rich does)

    @classmethod
    def of_process(cls) -> Environment:
        """This process's streams, as they are now (CliRunner swaps them per invocation)."""
        return cls(
            sys.stdin,
            sys.stdout,
            sys.stderr,
            _isatty(sys.stdin),
            _isatty(sys.stdout),
            _isatty(sys.stderr),
            _no_color(),
        )


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class Output:
    """Where one command's result, status lines and progress go; see the module docstring."""

    def __init__(self, env: Environment, *, quiet: bool = False, as_json: bool = False) -> None:
        self.env = env
        self.quiet = quiet
        self.as_json = as_json
        self._consoles: dict[str, Any] = {}

    # --- the result ---------------------------------------------------------------------------

    def result(self, data: Any, human: Callable[[], object] | None = None) -> None:
        """A command's result, once: JSON on stdout with ``--json``, else what ``human`` prints."""
        if self.as_json:
            self.json(data)
        elif human is not None:
            human()

    def json(self, data: Any) -> None:
        self.env.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        self.env.stdout.flush()

    def line(self, text: object = "") -> None:
        """One line of data on stdout, escaped (a newline inside a value cannot start a new line)."""
        self.env.stdout.write(safe_text(text) + "\n")

    def flush(self) -> None:
        """Hand what stdout holds to the reader now (a followed log, a streamed answer)."""
        self.env.stdout.flush()

    def table(
        self,
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
        if self.env.stdout_isatty and (own_line or shrink or drop):
            from rich.text import Text

            console = self.out_console()
            lines = fit_table(columns, rows, console.width, own_line=own_line, shrink=shrink, drop=drop)
            for i, text in enumerate(lines):
                # Text, not markup: cells are data. Never folded by rich: a long endpoint stays one
                # string the terminal wraps, so it can be copied whole.
                console.print(Text(text, style="bold" if i == 0 else ""), no_wrap=True, overflow="ignore", crop=False)
            return
        if self.env.stdout_isatty:
            from rich.table import Table
            from rich.text import Text

            t = Table(box=None, pad_edge=False, header_style="bold")
            for c in columns:
                t.add_column(c, overflow="fold")
            for r in rows:
                t.add_row(*(Text(v) for v in r))  # Text, not str: cells are data, never markup
            self.out_console().print(t)
            return
        widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
        for cells in [columns, *rows]:
            self.env.stdout.write("  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=False)).rstrip() + "\n")
        self.env.stdout.flush()

    # --- everything else: stderr --------------------------------------------------------------

    def info(self, message: str) -> None:
        """A status line on stderr (suppressed by --quiet); the blank lines it starts with are kept."""
        if not self.quiet:
            body = message.lstrip("\n")
            self.env.stderr.write(message[: len(message) - len(body)] + safe_text(body) + "\n")
            self.env.stderr.flush()

    def warning(self, message: str) -> None:
        """A line on stderr that --quiet does not hide."""
        self.env.stderr.write(safe_text(message) + "\n")
        self.env.stderr.flush()

    @property
    def live(self) -> bool:
        """Whether progress bars and spinners may be drawn: a terminal on stderr, colours on, not -q."""
        return self.env.stderr_isatty and not self.env.no_color and not self.quiet

    def err_console(self) -> Any:
        return self._console("err")

    def out_console(self) -> Any:
        return self._console("out")

    def _console(self, stream: str) -> Any:
        if stream not in self._consoles:
            from rich.console import Console

            target = self.env.stdout if stream == "out" else self.env.stderr
            tty = self.env.stdout_isatty if stream == "out" else self.env.stderr_isatty
            self._consoles[stream] = Console(
                file=target,
                no_color=self.env.no_color or not tty,
                highlight=False,
                soft_wrap=not tty,
                force_terminal=tty or None,
                emoji=tty,
                width=self.env.width,
            )
        return self._consoles[stream]


_OUTPUT = "kamiwaza.output"


def start(ctx: click.Context, quiet: bool) -> Output:
    """Make the Output for this invocation (the group's callback, before any command runs)."""
    out = ctx.meta[_OUTPUT] = Output(ctx.meta.get(ENVIRONMENT) or Environment.of_process(), quiet=quiet)
    return out


def of(ctx: click.Context) -> Output:
    """The Output of the command running in ``ctx`` (click shares ``meta`` across the whole chain of
    contexts; a command invoked without the group gets a default one)."""
    found: Output | None = ctx.meta.get(_OUTPUT)
    return found if found is not None else start(ctx, quiet=False)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        of(ctx).as_json = True
    return value


json_option = click.option(
    "--json", "as_json", is_flag=True, expose_value=False, callback=_set_json, help="Print JSON on stdout."
)
"""``--json`` for a command: its Output's result becomes JSON on stdout (``out.as_json``)."""


# --- values made printable (pure: no stream) ----------------------------------------------------


def clean(value: object) -> str:
    """One value made safe to print on one line (control characters as visible escapes)."""
    return safe_text(value)


def markup(value: object) -> str:
    """One value made safe for a rich markup string (progress descriptions, spinner text)."""
    from rich.markup import escape

    return str(escape(safe_text(value)))


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
