"""Model commands: ``pull``, ``list``/``ls``, ``show`` and ``rm``.

Thin: parse flags, run a workflow, render its events and results. Progress bars are
drawn here and only here (on stderr, and only on a terminal).
"""

from __future__ import annotations

from typing import Any

import click

from .. import quantization, workflows
from ..errors import EXIT_INTERRUPTED
from . import completion, output

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")

PLATFORM_FACTORY = "kamiwaza.platform_factory"
"""Key in ``click.Context.meta`` of a function (context, anonymous) -> Platform used instead of
``workflows.connect``: how the tests run commands against a FakePlatform (a parent context given to
``CliRunner.invoke(..., parent=ctx)`` shares its meta with the command's)."""


def _connect(ctx: click.Context, anonymous: bool = False) -> workflows.Platform:
    factory = ctx.meta.get(PLATFORM_FACTORY)
    if factory is not None:
        injected: workflows.Platform = factory(ctx, anonymous)
        return injected
    o = ctx.obj
    platform, started = workflows.connect(
        o.url, platform_flag=o.platform, insecure=o.insecure, ca_bundle=o.ca_bundle, anonymous=anonymous, debug=o.debug
    )
    if not platform.verify:
        output.info(f"Warning: TLS certificate verification is off for {platform.url}")
    if started:
        output.info(f"Started the local server at {started.url}")
    return platform


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
    """Draws pull events: rich bars on a terminal, a few plain lines otherwise."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.reported: dict[str, int] = {}

    def start(self, event: workflows.PullStarted) -> None:
        verb = "Watching the download of" if event.attached else "Downloading"
        output.info(f"🚀 {verb} {event.name}...")
        if output.stderr_is_tty() and not output.quiet:
            from rich.progress import Progress

            console = output.err_console()
            self.progress = Progress(*progress_columns(console.width), console=console, transient=False)
            self.progress.start()
        for f in event.files:
            self.update(f)

    def update(self, f: workflows.FileProgress) -> None:
        if self.progress is not None:
            if f.file_id not in self.tasks:
                self.tasks[f.file_id] = self.progress.add_task(output.markup(f.name), total=f.total, completed=f.done)
            self.progress.update(self.tasks[f.file_id], completed=f.done, total=f.total)
            return
        if not f.total:
            return
        quarter = min(4, f.done * 4 // f.total)
        if quarter > self.reported.get(f.file_id, 0 if f.done < f.total else -1) or f.file_id not in self.reported:
            self.reported[f.file_id] = quarter
            output.info(f"  {f.name}: {quarter * 25}% ({output.human_size(f.done)} of {output.human_size(f.total)})")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@click.command()
@click.argument("model", shell_complete=completion.complete_models)
@click.option(
    "--quantization",
    "quant",
    metavar="QUANT",
    help=f"Quantization to fetch when the repo has several (default {quantization.DEFAULT_QUANTIZATION}, "
    "with the platform's fallback order).",
)
@click.option("--cancel", is_flag=True, help="Cancel this model's download in the platform.")
@json_option
@click.pass_context
def pull(ctx: click.Context, model: str, quant: str | None, cancel: bool, as_json: bool) -> None:
    """Download MODEL into the platform, with a progress bar per file.

    MODEL is a catalog name (qwen2.5-7b-instruct), a repo id (Qwen/Qwen2.5-7B-Instruct-GGUF),
    either with :QUANT, a local .gguf path or file:// URL, or an http(s) URL to a .gguf.
    The download runs in the platform: Ctrl+C detaches, and running the same command
    again watches it.
    """
    platform = _connect(ctx)
    if cancel:
        m = workflows.cancel_pull(platform, model)
        output.info(f"🛑 Download of {m.name} cancelled")
        return
    view = PullView()
    watching = None
    accepted = None
    try:
        for event in workflows.pull(platform, model, quant):
            if isinstance(event, workflows.PullAccepted):
                accepted = event
            elif isinstance(event, workflows.PullStarted):
                watching = event
                view.start(event)
            elif isinstance(event, workflows.FileProgress):
                view.update(event)
            elif isinstance(event, workflows.Stalled):
                output.info(f"  no bytes received for {event.seconds:.0f} s; still waiting (Ctrl+C detaches)")
            elif isinstance(event, workflows.AlreadyDownloaded):
                output.info(f"✨ {event.name} is already downloaded")
                if as_json:
                    output.emit_json(workflows.model_json(event.model))
            elif isinstance(event, workflows.PullDone):
                view.stop()
                output.info("✨ Download complete!")
                if as_json:
                    output.emit_json(workflows.model_json(event.model))
    except KeyboardInterrupt:
        view.stop()
        if watching is not None:
            name = watching.name
        elif accepted is not None:
            name = accepted.repo_id
        else:
            raise
        output.info(
            f"\n{name} is still downloading in the background; run the same command to watch "
            f"(or cancel with: kamiwaza pull --cancel {model})"
        )
        ctx.exit(EXIT_INTERRUPTED)
    finally:
        view.stop()


@click.command("list")
@click.option("--catalog", is_flag=True, help="List the friendly names this CLI knows instead (no platform call).")
@json_option
@click.pass_context
def list_models(ctx: click.Context, catalog: bool, as_json: bool) -> None:
    """List the models downloaded to the platform (alias: ls)."""
    if catalog:
        from ..catalog import ALIASES, CATALOG

        entries = [
            {"name": n, "repo_id": r, "aliases": sorted(a for a, t in ALIASES.items() if t == n)}
            for n, r in CATALOG.items()
        ]
        if as_json:
            output.emit_json(entries)
        else:
            output.table(
                ["NAME", "REPO ID", "ALIASES"],
                [[str(e["name"]), str(e["repo_id"]), ", ".join(e["aliases"]) or "-"] for e in entries],
            )
        return
    platform = _connect(ctx)
    rows = [workflows.model_json(m) for m in workflows.list_models(platform)]
    if as_json:
        output.emit_json(rows)
        return
    if not rows:
        output.info("No models yet. Pull one with: kamiwaza pull qwen2.5-0.5b-instruct")
        return
    table = []
    for r in rows:
        files = str(r["files"]) if r["files_ready"] == r["files"] else f"{r['files_ready']}/{r['files']}"
        name = r["name"] if r["status"] == "ready" else f"{r['name']} ({r['status']})"
        table.append(
            [
                name,
                r["repo_id"] or "-",
                ",".join(r["quantizations"]) or "-",
                files,
                output.human_size(r["size"]),
                output.ago(r["modified"]),
            ]
        )
    output.table(["MODEL", "REPO ID", "QUANT", "FILES", "SIZE", "MODIFIED"], table)


@click.command()
@click.argument("model", shell_complete=completion.complete_downloaded_models)
@json_option
@click.pass_context
def show(ctx: click.Context, model: str, as_json: bool) -> None:
    """Show a downloaded MODEL: files, quantizations, configs and GGUF facts."""
    platform = _connect(ctx)
    details = workflows.describe(platform, model)
    if as_json:
        output.emit_json(details)
        return
    m = details["model"]
    line = output.line  # every value here is the platform's: printed escaped, one line each
    line(f"Model     {m['name']}")
    line(f"Repo ID   {m['repo_id']}")
    line(f"Hub       {m['hub'] or '-'}")
    line(f"ID        {m['id']}")
    line(f"Status    {m['status']}")
    if details["quantizations_available"]:
        line(
            f"Quants    {', '.join(details['quantizations_available'])} (downloaded: "
            f"{', '.join(m['quantizations']) or 'none'})"
        )
    line("Files")
    output.table(
        ["  NAME", "SIZE", "SHA256", "STATUS"],
        [
            [f"  {f['name']}", output.human_size(f["size"]), (f["sha256"] or "-")[:16], f["status"]]
            for f in details["files"]
        ],
    )
    for fact in details["gguf"]:
        line(
            f"GGUF      {fact['file']}: {fact['architecture'] or '?'} "
            f"{_params(fact['parameters'])}, context {fact['context_length'] or '?'}, "
            f"{fact['quantization'] or '?'}, chat template: {'yes' if fact['chat_template'] else 'no'}"
        )
    line("Configs")
    for c in details["configs"]:
        line(f"  {c['name'] or c['id']}{' (default)' if c['default'] else ''}  {c['config'] or ''}")
    for d in details["deployments"]:
        slots = f"{d['slots']} requests at once" if d["slots"] else "requests at once: ?"
        context = f", {d['context_per_slot']} tokens of context each" if d["context_per_slot"] else ""
        line(f"Serving   {d['id'][:8]} {d['status']}: {slots}{context}")


def _params(n: int | None) -> str:
    if not n:
        return "? params"
    return f"{n / 1e9:.1f}B params" if n >= 1e9 else f"{n / 1e6:.0f}M params"


@click.command()
@click.argument("models", nargs=-1, required=True, shell_complete=completion.complete_downloaded_models)
@click.option("--force", "-f", is_flag=True, help="Remove even if a deployment uses it.")
@click.pass_context
def rm(ctx: click.Context, models: tuple[str, ...], force: bool) -> None:
    """Remove downloaded MODELS and their files from the platform."""
    platform = _connect(ctx)
    for m in workflows.remove(platform, list(models), force=force):
        output.info(f"🗑  Removed {m.name}")
