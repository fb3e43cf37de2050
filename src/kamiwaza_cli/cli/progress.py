"""Pull progress, drawn for ``pull``, ``serve`` and ``run``: rich bars on a terminal, a few plain
lines otherwise (a line per file at 0, 25, 50, 75 and 100 %), always on stderr; and which download
such a command leaves running when Ctrl+C stops it."""

from __future__ import annotations

from typing import Any

from .. import workflows
from ..quantization import DEFAULT_QUANTIZATION
from .output import Output, human_size, markup

# Widths the progress columns take at most: "100%", "123.4/253.1 MB", "12.3 MB/s", "0:01:02".
_PERCENT, _BYTES, _SPEED, _ETA = 4, 17, 10, 7


def progress_columns(width: int) -> list[Any]:
    """The columns of a pull's progress line, for a terminal ``width`` wide: one line a file, never
    wrapped. Narrower terminals get a shorter file name (cut with "…"), then no speed, then no time
    left; the bar takes what is left (10 to 40 characters)."""
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn
    from rich.table import Column

    name = 40 if width >= 110 else 24 if width >= 70 else 14
    extras: list[tuple[Any, int]] = []
    if width >= 110:
        extras.append((TransferSpeedColumn(), _SPEED))
    if width >= 70:
        extras.append((TimeRemainingColumn(), _ETA))
    fixed = name + _PERCENT + _BYTES + sum(w for _, w in extras) + (3 + len(extras))  # one space between columns
    bar = max(10, min(40, width - fixed - 1))
    return [
        TextColumn("{task.description}", table_column=Column(max_width=name, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=bar),
        TextColumn("{task.percentage:>3.0f}%", table_column=Column(no_wrap=True)),
        DownloadColumn(table_column=Column(no_wrap=True)),
        *(column for column, _ in extras),
    ]


class PullView:
    """Draws the events of one pull on ``out``'s stderr."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.reported: dict[str, int] = {}

    def start(self, event: workflows.PullStarted) -> None:
        verb = "Watching the download of" if event.attached else "Downloading"
        what = f"{event.name}:{event.quantization}" if event.quantization else event.name
        self.out.info(f"🚀 {verb} {what}...")
        if self.out.live:
            from rich.progress import Progress

            console = self.out.err_console()
            self.progress = Progress(*progress_columns(console.width), console=console, transient=False)
            self.progress.start()
        for f in event.files:
            self.update(f)

    def accepted(self, event: workflows.PullAccepted) -> None:
        """Say which quantization the default order picked when the repo has no q6_k."""
        if event.defaulted and event.quantization:
            self.out.info(
                f"No {DEFAULT_QUANTIZATION} in {event.repo_id}: picked {event.quantization} "
                "(the default order; name another with NAME:QUANT)"
            )

    def update(self, f: workflows.FileProgress) -> None:
        if self.progress is not None:
            if f.file_id not in self.tasks:
                self.tasks[f.file_id] = self.progress.add_task(markup(f.name), total=f.total, completed=f.done)
            self.progress.update(self.tasks[f.file_id], completed=f.done, total=f.total)
            return
        if not f.total:
            return
        quarter = min(4, f.done * 4 // f.total)
        if quarter > self.reported.get(f.file_id, 0 if f.done < f.total else -1) or f.file_id not in self.reported:
            self.reported[f.file_id] = quarter
            self.out.info(f"  {f.name}: {quarter * 25}% ({human_size(f.done)} of {human_size(f.total)})")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class LeftRunning:
    """Which download a ``pull``, ``serve`` or ``run`` of ``model`` (as the user typed it) leaves
    running in the platform if Ctrl+C stops it now, from the pull events it has seen: the download
    goes on without the command."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.name: str | None = None
        self.answered = False  # False: the request went and its answer has not come

    def see(self, event: object) -> None:
        if isinstance(event, workflows.PullRequested):
            self.name, self.answered = event.repo_id, False
        elif isinstance(event, workflows.PullAccepted):
            self.name, self.answered = event.repo_id, True
        elif isinstance(event, workflows.PullStarted):
            self.name, self.answered = event.name, True
        elif isinstance(event, (workflows.PullDone, workflows.AlreadyDownloaded)):
            self.name = None

    def told(self, out: Output) -> bool:
        """Tell the user that the download goes on and how to get back to it; False when none does."""
        if self.name is None:
            return False
        said = f"{self.name} is still downloading"
        if not self.answered:
            said = f"If the platform took the request, {said}"
        out.info(
            f"\n{said} in the background; run the same command to watch "
            f"(or cancel with: kamiwaza pull --cancel {self.model})"
        )
        return True
