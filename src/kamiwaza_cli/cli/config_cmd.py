"""``kamiwaza config``: set the platform URL and show every setting with its source.

Never imports the SDK: ``config`` must answer instantly.
"""

from __future__ import annotations

import click

from .. import config as settings
from . import output


@click.group()
def config() -> None:
    """Show and change settings ($KAMIWAZA_HOME/config.json)."""


@config.command("set-url")
@click.argument("url")
def set_url(url: str) -> None:
    """Use the platform at URL (e.g. https://kamiwaza.example.com/api); `local` for the local server."""
    data = settings.read_file()
    if url.strip().lower() in ("local", "default"):
        data.pop("base_url", None)
        path = settings.write_file(data)
        output.info(f"✨ Using the local server ({settings.local_url()}); saved to {path}")
        return
    normalized = settings.normalize_url(url)
    data["base_url"] = normalized
    path = settings.write_file(data)
    output.info(f"✨ Platform URL set to {normalized} (saved to {path})")


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def show(as_json: bool) -> None:
    """Show each setting, its value and where it came from (flag, env, file, default)."""
    ctx = click.get_current_context()
    url_flag = ctx.find_root().params.get("url")
    rows = []
    for r in settings.show():
        if r.key == "base_url":
            b = settings.base_url(url_flag)
            r = settings.Resolved("base_url", b.value, b.source)
        rows.append({"key": r.key, "env": settings.SETTINGS[r.key].env, "value": r.value, "source": r.source})
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["SETTING", "VALUE", "SOURCE", "ENV"],
        [[str(r["key"]), str(r["value"] or "-"), str(r["source"]), str(r["env"])] for r in rows],
    )
