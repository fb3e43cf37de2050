"""Model commands: ``pull``, ``list``/``ls``, ``show`` and ``rm``.

Thin: parse flags, run a workflow, hand its result to the command's ``Output`` once (pull's
progress is drawn by progress.py).
"""

from __future__ import annotations

from typing import Any

import click

from .. import quantization, workflows
from ..errors import Detached
from . import completion, output
from .connection import connect
from .output import human_size, json_option
from .progress import LeftRunning, PullView


@click.command()
@click.argument("model", shell_complete=completion.complete_models)
@click.option(
    "--quantization",
    "quant",
    metavar="QUANT",
    help="Quantization to fetch, as NAME:QUANT does (q4_k_m, q8_0, iq4_xs, f16, q4...; see README). Default: "
    f"what is downloaded already, else {quantization.DEFAULT_QUANTIZATION}, then the documented fallback order.",
)
@click.option("--cancel", is_flag=True, help="Cancel this model's download in the platform.")
@json_option
@click.pass_context
def pull(ctx: click.Context, model: str, quant: str | None, cancel: bool) -> None:
    """Download MODEL into the platform, with a progress bar per file.

    MODEL is a catalog name (qwen2.5-7b-instruct), a repo id (Qwen/Qwen2.5-7B-Instruct-GGUF),
    either with :QUANT, a local .gguf path or file:// URL, or an http(s) URL to a .gguf.
    The download runs in the platform: Ctrl+C detaches, and running the same command
    again watches it.
    """
    out = output.of(ctx)
    platform = connect(ctx)
    if cancel:
        m = workflows.cancel_pull(platform, model)
        out.info(f"🛑 Download of {m.name} cancelled")
        return
    view = PullView(out)
    left = LeftRunning(model)
    try:
        for event in workflows.pull(platform, model, quant):
            left.see(event)
            if isinstance(event, workflows.PullAccepted):
                view.accepted(event)
            elif isinstance(event, workflows.PullStarted):
                view.start(event)
            elif isinstance(event, workflows.FileProgress):
                view.update(event)
            elif isinstance(event, workflows.Stalled):
                out.info(f"  no bytes received for {event.seconds:.0f} s; still waiting (Ctrl+C detaches)")
            elif isinstance(event, workflows.AlreadyDownloaded):
                what = f"{event.name}:{event.quantization}" if event.quantization else event.name
                out.info(f"✨ {what} is already downloaded")
                out.result(workflows.model_json(event.model))
            elif isinstance(event, workflows.PullDone):
                view.stop()
                out.info("✨ Download complete!")
                out.result(workflows.model_json(event.model))
    except KeyboardInterrupt:
        view.stop()
        if not left.told(out):
            raise
        raise Detached from None
    finally:
        view.stop()


@click.command("list")
@click.option("--catalog", is_flag=True, help="List the friendly names this CLI knows instead (no platform call).")
@json_option
@click.pass_context
def list_models(ctx: click.Context, catalog: bool) -> None:
    """List the models downloaded to the platform (alias: ls)."""
    out = output.of(ctx)
    if catalog:
        from ..catalog import ALIASES, CATALOG

        entries = [
            {"name": n, "repo_id": r, "aliases": sorted(a for a, t in ALIASES.items() if t == n)}
            for n, r in CATALOG.items()
        ]
        out.result(
            entries,
            lambda: out.table(
                ["NAME", "REPO ID", "ALIASES"],
                [[str(e["name"]), str(e["repo_id"]), ", ".join(e["aliases"]) or "-"] for e in entries],
            ),
        )
        return
    rows = [workflows.model_json(m) for m in workflows.list_models(connect(ctx))]
    out.result(rows, lambda: _models_table(out, rows))


def _models_table(out: output.Output, rows: list[dict]) -> None:
    if not rows:
        out.info("No models yet. Pull one with: kamiwaza pull qwen2.5-0.5b-instruct")
        return
    table = []
    for r in rows:
        for v in r["variants"] or [None]:
            table.append(_list_row(r, v))
    # Fits the terminal: MODEL (what the user types next, its tag included) stays whole; the file
    # and repo are cut first, then MODIFIED, REPO ID, QUANT (MODEL has it) and FILE go.
    out.table(
        ["MODEL", "REPO ID", "QUANT", "FILE", "SIZE", "MODIFIED"],
        table,
        shrink=("FILE", "REPO ID"),
        drop=("MODIFIED", "REPO ID", "QUANT", "FILE"),
    )


def _list_row(r: dict[str, Any], v: dict[str, Any] | None) -> list[str]:
    """One quantization of a model: its first file (+ how many more parts), marked when not whole."""
    if v is None:
        return [f"{r['name']} ({r['status']})", r["repo_id"] or "-", "-", "-", human_size(r["size"]), "-"]
    name = f"{r['name']}:{v['quantization']}" if v["quantization"] else r["name"]
    if v["status"] == "incomplete":
        name += f" (incomplete: {v['parts_ready']}/{v['parts']} files)"
    elif v["status"] != "ready":
        name += f" ({v['status']})"
    more = len(v["files"]) - 1
    file = v["file"].rsplit("/", 1)[-1] + (f" +{more}" if more > 0 else "")
    if v["quantization"] is None and more > 0:  # a repo without GGUF weights (a cluster's vLLM model)
        file = f"{len(v['files'])} files"
    return [name, r["repo_id"] or "-", v["quantization"] or "-", file, human_size(v["size"]), output.ago(r["modified"])]


@click.command()
@click.argument("model", shell_complete=completion.complete_downloaded_models)
@json_option
@click.pass_context
def show(ctx: click.Context, model: str) -> None:
    """Show a downloaded MODEL: files, quantizations, configs and GGUF facts.

    MODEL:QUANT shows that quantization's files only.
    """
    out = output.of(ctx)
    details = workflows.describe(connect(ctx), model)
    out.result(details, lambda: _describe(out, details))


def _describe(out: output.Output, details: dict) -> None:
    m = details["model"]
    line = out.line  # every value here is the platform's: printed escaped, one line each
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
    out.table(
        ["  NAME", "SIZE", "SHA256", "STATUS"],
        [[f"  {f['name']}", human_size(f["size"]), (f["sha256"] or "-")[:16], f["status"]] for f in details["files"]],
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
    """Remove downloaded MODELS and their files from the platform.

    NAME:QUANT removes that quantization's files only; the model goes with its last one.
    """
    out = output.of(ctx)
    for r in workflows.remove(connect(ctx), list(models), force=force):
        rest = "" if r.model_gone else f" ({r.files} file{'s' if r.files != 1 else ''}; other quantizations kept)"
        out.info(f"🗑  Removed {r.label}{rest}")
