"""``kamiwaza config``: platforms (named URLs), the one in use, and every setting with its source.

Never imports the SDK: ``config`` must answer instantly.
"""

from __future__ import annotations

import click

from .. import config as settings
from ..errors import UsageError
from . import output
from .output import json_option


@click.group()
def config() -> None:
    """Show and change settings ($KAMIWAZA_HOME/config.json)."""


@config.command("set-url")
@click.argument("url")
@click.option("--name", "-n", default="default", show_default=True, help="Name of this platform.")
@click.pass_context
def set_url(ctx: click.Context, url: str, name: str) -> None:
    """Use the platform at URL (e.g. https://kamiwaza.example.com/api) from now on.

    URL `local` switches back to the embedded local server. Several platforms can be
    kept under different --name values; switch with `kamiwaza config use NAME`.
    """
    out = output.of(ctx)
    data = settings.read_file()
    if url.strip().lower() in (settings.LOCAL, "default"):
        data["platform"] = settings.LOCAL
        path = settings.write_file(data)
        out.info(f"✨ Using the local server ({settings.local_url()}); saved to {path}")
        return
    if name == settings.LOCAL or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"invalid platform name {name!r}: use letters, digits, '-', '_' or '.' (not 'local')")
    normalized = settings.normalize_url(url)
    named = dict(data.get("platforms") or {})
    if data.get("base_url") and "default" not in named:
        named["default"] = {"url": data["base_url"]}
    data.pop("base_url", None)
    named[name] = {"url": normalized}
    data["platforms"] = named
    data["platform"] = name
    path = settings.write_file(data)
    out.info(f"✨ Platform {name} set to {normalized} and in use (saved to {path})")


@config.command("use")
@click.argument("name")
@click.pass_context
def use(ctx: click.Context, name: str) -> None:
    """Switch to the platform NAME (`local` for the embedded local server)."""
    data = settings.read_file()
    url = settings.platform_url(name, data)
    data["platform"] = name
    settings.write_file(data)
    output.of(ctx).info(f"✨ Using platform {name} ({url})")


@config.command("platforms")
@json_option
@click.pass_context
def list_platforms(ctx: click.Context) -> None:
    """List the named platforms; the one in use is marked."""
    current = settings.current_platform().value
    rows = [{"name": settings.LOCAL, "url": settings.local_url(), "current": current == settings.LOCAL}]
    rows += [{"name": n, "url": u, "current": current == n} for n, u in sorted(settings.platforms().items())]
    out = output.of(ctx)
    out.result(
        rows,
        lambda: out.table(
            ["", "NAME", "URL"], [["*" if r["current"] else "", str(r["name"]), str(r["url"])] for r in rows]
        ),
    )


@config.command("show")
@json_option
@click.pass_context
def show(ctx: click.Context) -> None:
    """Show each setting, its value and where it came from (flag, env, file, default)."""
    root = ctx.find_root().params
    rows = []
    for r in settings.show():
        if r.key == "base_url":
            b = settings.base_url(root.get("url"), root.get("platform_name"))
            r = settings.Resolved("base_url", b.value, b.source)
        elif r.key == "platform" and root.get("platform_name"):
            r = settings.current_platform(root.get("platform_name"))
        rows.append({"key": r.key, "env": settings.SETTINGS[r.key].env, "value": r.value, "source": r.source})
    out = output.of(ctx)
    out.result(
        rows,
        lambda: out.table(
            ["SETTING", "VALUE", "SOURCE", "ENV"],
            [[str(r["key"]), str(r["value"] or "-"), str(r["source"]), str(r["env"])] for r in rows],
        ),
    )
