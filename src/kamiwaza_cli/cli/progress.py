"""Pull progress, drawn for ``pull``, ``serve`` and ``run``: rich bars on a terminal, a few plain
lines otherwise (a line per file at 0, 25, 50, 75 and 100 %), always on stderr."""

from __future__ import annotations

from typing import Any

from .. import workflows
from ..quantization import DEFAULT_QUANTIZATION
from .output import Output, human_size, markup


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
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.out.err_console(),
                transient=False,
            )
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
