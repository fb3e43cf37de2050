"""Serving commands: ``serve``, ``ps``, ``stop`` and ``logs``.

Thin like the model commands: workflows do the steps and yield events; this module
draws the spinner (stderr, terminals only) and hands tables and endpoints to the Output.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import click

from .. import quantization, statuses, workflows
from ..errors import EXIT_INTERRUPTED, Detached, PlatformUnreachable
from . import completion, output
from .connection import connect
from .output import Output, json_option, markup
from .progress import LeftRunning, PullView

STATUS_LABELS = {
    statuses.DEPLOYED: "● RUNNING",
    **{status: "◌ STARTING" for status in statuses.STARTING},
    **{status: f"✖ {status}" for status in statuses.FAILURES},
    statuses.STOPPED: "■ STOPPED",
}


def run_serve(
    out: Output,
    platform: workflows.Platform,
    model: str,
    *,
    pull_if_needed: bool = True,
    port: int | None = None,
    parallel: int | None = None,
    force_cpu: bool = False,
    context: int | None = None,
) -> workflows.Deployed:
    """Render ``workflows.serve`` (shared with ``run``): pull bars, a status spinner, the endpoint.
    Ctrl+C during the pull says how to get back to the download and raises ``Detached``."""
    view = PullView(out)
    left = LeftRunning(model)
    spinner: Any = None
    announced = False
    deployed = None
    try:
        events = workflows.serve(
            platform,
            model,
            pull_if_needed=pull_if_needed,
            port=port,
            parallel=parallel,
            force_cpu=force_cpu,
            context=context,
        )
        for event in events:
            left.see(event)
            if isinstance(event, workflows.PullAccepted):
                view.accepted(event)
            elif isinstance(event, workflows.PullStarted):
                view.start(event)
            elif isinstance(event, workflows.FileProgress):
                view.update(event)
            elif isinstance(event, workflows.AlreadyDownloaded):
                pass
            elif isinstance(event, workflows.PullDone):
                view.stop()
                out.info("✨ Download complete!")
            elif isinstance(event, workflows.DeployStatus):
                if not announced:
                    announced = True
                    out.info(f"🚀 Deploying {event.name}...")
                    if out.live:
                        spinner = out.err_console().status(markup(event.status))
                        spinner.start()
                if spinner is not None:
                    spinner.update(markup(event.status))
            elif isinstance(event, workflows.Deployed):
                deployed = event
    except KeyboardInterrupt:
        view.stop()
        if not left.told(out):
            raise
        raise Detached from None
    finally:
        view.stop()
        if spinner is not None:
            spinner.stop()
    assert deployed is not None
    if deployed.reused:
        out.info(f"✨ Using existing deployment of {deployed.label}")
    else:
        out.info("✨ Deployment ready!")
    out.info(f"✨ Model deployed at: {deployed.endpoint}")
    return deployed


# The smallest context the engine takes (llama.cpp's MIN_CONTEXT on the local server): refused here
# at once, before anything is pulled or deployed; the upper bound (the model's trained length) only
# the platform knows, and it refuses a larger one with a 400, which exits 2 as well.
MIN_CONTEXT = 512
context_option = click.option(
    "--ctx",
    "context",
    type=click.IntRange(min=MIN_CONTEXT),
    help="Context per request, in tokens (default: what fits in memory, up to 8192; "
    "never above what the model was trained for).",
)


def _deployment_row(d: workflows.Deployment, file: str | None = None) -> dict[str, Any]:
    """A deployment as ``ps --json`` and ``serve --json`` print it (docs/cli.md)."""
    file = file or d.file_name
    uptime = None
    if d.status == statuses.DEPLOYED and d.deployed_at:
        started = datetime.fromisoformat(d.deployed_at.replace("Z", "+00:00"))
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        uptime = int((datetime.now(timezone.utc) - started).total_seconds())
    return {
        "id": d.id,
        "model": d.model_name,
        "model_id": d.model_id,
        "quantization": quantization.detect_quantization(file) if file else None,
        "file": file,
        "status": d.status,
        "engine": d.engine,
        "endpoint": d.endpoint,
        "port": d.port,
        "slots": d.slots,
        "context_per_slot": d.context_per_slot,
        "threads": d.threads,
        "uptime_seconds": uptime,
        "requested_at": d.requested_at,
        "deployed_at": d.deployed_at,
        "last_error_code": d.error_code,
        "last_error_message": d.error_message,
    }


def _label(d: workflows.Deployment) -> str:
    """NAME:QUANT of what a deployment serves (the name alone when the platform does not say the file)."""
    quant = quantization.detect_quantization(d.file_name) if d.file_name else None
    return f"{d.model_name}:{quant}" if quant else str(d.model_name)


def slots_label(slots: int | None, context: int | None) -> str:
    """ "4×4096": requests served at once, and the context each of them gets."""
    if not slots:
        return "-"
    return f"{slots}×{context}" if context else str(slots)


def _uptime(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


@click.command()
@click.argument("model", shell_complete=completion.complete_models)
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Also answer the OpenAI API on this port (default: a free one)."
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 64),
    help="Requests served at once, each with the full context (default: 4 on the local server).",
)
@click.option("--cpu", "force_cpu", is_flag=True, help="Run on the CPU even where a GPU is available.")
@context_option
@click.option("--no-pull", is_flag=True, help="Fail instead of pulling a model that is not downloaded.")
@json_option
@click.pass_context
def serve(
    ctx: click.Context,
    model: str,
    port: int | None,
    parallel: int | None,
    force_cpu: bool,
    context: int | None,
    no_pull: bool,
) -> None:
    """Deploy MODEL as an OpenAI-compatible API and print its endpoint.

    Pulls the model first if needed, and reuses a running deployment of it.
    """
    out = output.of(ctx)
    platform = connect(ctx)
    try:
        deployed = run_serve(
            out,
            platform,
            model,
            pull_if_needed=not no_pull,
            port=port,
            parallel=parallel,
            force_cpu=force_cpu,
            context=context,
        )
    except Detached:  # during the pull: said how to get back to the download
        ctx.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        out.info("\nStill deploying in the platform; see it with: kamiwaza ps")
        ctx.exit(EXIT_INTERRUPTED)
    out.result(_deployment_row(deployed.deployment, deployed.file))  # the endpoint itself went to stderr above


@click.command()
@click.option("--all", "-a", "show_all", is_flag=True, help="Include stopped deployments.")
@json_option
@click.pass_context
def ps(ctx: click.Context, show_all: bool) -> None:
    """List deployments: running, starting and failed (stopped ones with --all)."""
    out = output.of(ctx)
    platform = connect(ctx)
    deployments = workflows.list_deployments(platform)  # one request: endpoints (and files, locally) included
    if not show_all:
        deployments = [d for d in deployments if d.status != statuses.STOPPED]
    names = workflows.file_names(platform, deployments)
    rows = [_deployment_row(d, names.get(d.file_id or "")) for d in deployments]
    out.result(rows, lambda: _deployments_table(out, rows))


def _deployments_table(out: Output, rows: list[dict[str, Any]]) -> None:
    if not rows:
        out.info("Nothing is running. Start a model with: kamiwaza serve MODEL")
        return
    out.table(
        ["MODEL", "FILE", "ID", "STATUS", "ENGINE", "SLOTS×CTX", "ENDPOINT", "UPTIME"],
        [
            [
                f"{r['model'] or '-'}:{r['quantization']}" if r["quantization"] else r["model"] or "-",
                (r["file"] or "-").rsplit("/", 1)[-1],
                r["id"][:8],
                STATUS_LABELS.get(r["status"], r["status"]),
                r["engine"] or "-",
                slots_label(r["slots"], r["context_per_slot"]),
                r["endpoint"] or (r["last_error_code"] or "-"),
                _uptime(r["uptime_seconds"]),
            ]
            for r in rows
        ],
        # Fits the terminal: the endpoint (a URL to copy whole) on its own line, then shorter
        # file and model names, then fewer columns (the file last: NAME:QUANT says the quantization).
        own_line="ENDPOINT",
        shrink=("FILE", "MODEL"),
        drop=("ENGINE", "UPTIME", "FILE"),
    )


@click.command()
@click.argument("target", required=False, shell_complete=completion.complete_deployments)
@click.option("--all", "-a", "stop_all", is_flag=True, help="Stop every running deployment.")
@click.pass_context
def stop(ctx: click.Context, target: str | None, stop_all: bool) -> None:
    """Stop the deployment(s) of a MODEL, or one deployment by ID (prefix)."""
    if not target and not stop_all:
        raise click.UsageError("name a MODEL or deployment ID, or use --all")
    out = output.of(ctx)
    platform = connect(ctx)
    if stop_all:
        stopped = workflows.stop(platform, None, all_=True)
        if not stopped:
            out.info("Nothing was running")
        for d in stopped:
            out.info(f"🛑 Stopped {_label(d)} ({d.id[:8]})")
        return
    assert target is not None
    targets = workflows.find_deployments(platform, target)
    if not targets:
        raise workflows.NotFound(f"{target!r} is not running", hint="see running models with: kamiwaza ps")
    out.info(f"🛑 Stopping {', '.join(sorted({_label(d) for d in targets}))}...")
    workflows.stop_deployments(platform, targets)
    out.info("✨ Model stopped")


@click.command()
@click.argument("target", shell_complete=completion.complete_deployments)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the engine stops.")
@click.option(
    "--lines", "-n", type=click.IntRange(min=1), default=100, show_default=True, help="How many lines from the end."
)
@click.pass_context
def logs(ctx: click.Context, target: str, follow: bool, lines: int) -> None:
    """Print the engine log of a MODEL's deployment, or of one deployment by ID."""
    out = output.of(ctx)
    platform = connect(ctx)
    every = workflows.list_deployments(platform)
    found = workflows.find_deployments(platform, target, deployments=every) or workflows.find_deployments(
        platform, target, active_only=False, deployments=every
    )
    if not found:
        raise workflows.NotFound(f"no deployment of {target!r}", hint="see deployments with: kamiwaza ps --all")
    dep = found[-1]
    page = workflows.log_page(platform, dep.id, lines=min(lines, LOG_PAGE))
    _print_lines(out, page.lines[-lines:])
    if not follow:
        return
    try:
        if page.next_offset is not None:
            _follow_by_offset(out, platform, dep.id, page.next_offset)
        else:
            _follow_by_count(out, platform, dep.id, page.total)
    except KeyboardInterrupt:
        return


LOG_PAGE = 10000  # the most lines one request returns (the local server's limit)
LOG_POLL = 1.0
# Following by position costs the server one read of what is new, so it asks often enough that a
# line shows about as it is written (tail -f waits 1 s); following by count re-reads the platform's
# whole window each time, so it asks once a second.
LOG_POLL_BY_OFFSET = 0.25


def _print_lines(out: Output, lines: Any) -> None:
    for line in lines:
        out.line(line)  # an engine echoes what it was sent: escape sequences stay visible text
    out.flush()


def _follow_by_offset(out: Output, platform: workflows.Platform, dep_id: str, offset: int) -> None:
    """Follow from a log position (the local server): nothing is missed or shown twice when the log
    rotates, the engine restarts, or the server restarts meanwhile (then it waits for it, as tail -F)."""
    waiting = False
    while True:
        try:
            page = workflows.log_page(platform, dep_id, since=offset, lines=LOG_PAGE)
        except PlatformUnreachable:
            if not waiting:
                out.info("… the platform is not answering; waiting for it (Ctrl+C to stop)")
                waiting = True
            time.sleep(LOG_POLL_BY_OFFSET)
            continue
        waiting = False
        _print_lines(out, page.lines)
        offset = page.next_offset if page.next_offset is not None else offset
        if len(page.lines) >= LOG_PAGE:
            continue  # more is waiting: no pause
        if not page.active and not page.lines and not workflows.still_starting(platform, dep_id):
            return
        time.sleep(LOG_POLL_BY_OFFSET)


def _follow_by_count(out: Output, platform: workflows.Platform, dep_id: str, seen: int) -> None:
    """Follow by the count of lines the platform has seen (a platform that gives no position)."""
    while True:
        time.sleep(LOG_POLL)
        page = workflows.log_page(platform, dep_id)
        new = page.total - seen
        if new > 0:
            _print_lines(out, page.lines[-new:])
            seen = page.total
        elif not page.active:
            return
