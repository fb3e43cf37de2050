"""Shell completion: ``kamiwaza completion bash|zsh|fish`` and the MODEL / TARGET candidates.

The scripts are click's own (``click.shell_completion``): the shell calls
``_KAMIWAZA_COMPLETE=<shell>_complete kamiwaza`` on every Tab, and click answers with
commands and options. Model names and deployments come from the platform through one
cheap HTTP GET each (stdlib urllib, 1 s timeout), never through the SDK (which costs
~1.5 s to import) and never by starting the local server. Completion callbacks must not
raise and must not print: any failure means "no candidates".
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from .. import statuses
from ..textsafe import has_unsafe, safe_text

PROG_NAME = "kamiwaza"
COMPLETE_VAR = "_KAMIWAZA_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
HTTP_TIMEOUT = 1.0


@click.command()
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    It completes commands, options, downloaded and catalog model names, and the
    running deployments for stop/logs. Load it from your shell's startup file:

    \b
      bash (~/.bashrc):                  eval "$(kamiwaza completion bash)"
      zsh  (~/.zshrc, after compinit):   eval "$(kamiwaza completion zsh)"
      fish (~/.config/fish/config.fish): kamiwaza completion fish | source

    Bash needs version 4.4 or newer.
    """
    # Bytes, as click writes it: a text stdout on Windows would turn LF into CRLF and break the script.
    click.echo(completion_script(ctx.find_root().command, shell).encode(), nl=False)


def completion_script(root: click.Command, shell: str) -> str:
    """The exact script click itself prints for ``_KAMIWAZA_COMPLETE=<shell>_source kamiwaza``."""
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click.Choice already refused it
        raise click.BadParameter(f"unsupported shell {shell!r}")
    return cls(root, {}, PROG_NAME, COMPLETE_VAR).source()


# Candidates


def _get_json(ctx: click.Context, path: str) -> Any:
    """GET ``{base_url}{path}``: the parsed JSON, or None on any failure."""
    try:
        from .. import config as settings

        flags = ctx.find_root().params or {}
        url_flag, platform_flag = flags.get("url"), flags.get("platform_name")
        resolved = settings.base_url(url_flag, platform_flag) if platform_flag else settings.base_url(url_flag)
        base = resolved.value
        if not base:
            return None
        request = urllib.request.Request(base.rstrip("/") + path, headers={"Accept": "application/json"})
        token = settings.resolve("api_key").value or _stored_token(base)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        tls = _tls_context(settings, flags) if base.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=tls) as response:
            return json.loads(response.read().decode("utf-8"))
    except Exception:  # completion must never fail or print: no candidates instead
        return None


def _stored_token(base: str) -> str | None:
    """The token `kamiwaza login` saved for this platform, if any."""
    try:
        from .. import credentials

        record = credentials.load(base)
        return str(record["access_token"]) if record else None
    except Exception:
        return None


def _tls_context(settings: Any, flags: dict[str, Any]) -> Any:
    """The same verification choice the commands make (--ca-bundle, --insecure, settings)."""
    import ssl

    try:
        verify, ca_bundle = settings.tls_verify(bool(flags.get("insecure")), flags.get("ca_bundle"))
    except Exception:
        verify, ca_bundle = True, None
    context = ssl.create_default_context(cafile=ca_bundle)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _matching(items: list[CompletionItem], incomplete: str) -> list[CompletionItem]:
    wanted = incomplete.lower()
    seen: set[str] = set()
    out = []
    for item in items:
        if has_unsafe(str(item.value)):
            continue  # a name with control characters cannot be typed, and would write to the terminal
        key = str(item.value).lower()
        if key.startswith(wanted) and key not in seen:
            seen.add(key)
            item.help = safe_text(item.help) if item.help else item.help
            out.append(item)
    return out


def _downloaded(ctx: click.Context) -> list[CompletionItem]:
    models = _get_json(ctx, "/models/?load_files=false")
    if not isinstance(models, list):
        return []
    items = []
    for m in models:
        if isinstance(m, dict) and m.get("name"):
            items.append(CompletionItem(str(m["name"]), help=str(m.get("repo_modelId") or "") or None))
    return sorted(items, key=lambda i: str(i.value).lower())


def _looks_like_path(incomplete: str) -> bool:
    return incomplete.startswith(("./", "../", "/", "~", "file:")) or incomplete in (".", "..")


def complete_downloaded_models(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """MODEL of show/rm: the names of the models in the platform."""
    return _matching(_downloaded(ctx), incomplete)


def complete_models(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """MODEL of pull/serve/run: local paths, downloaded models, then the catalog's friendly names."""
    if _looks_like_path(incomplete):
        return [CompletionItem(incomplete, type="file")]
    try:
        from ..catalog import CATALOG

        catalog = [CompletionItem(name, help=repo) for name, repo in CATALOG.items()]
    except Exception:
        catalog = []
    return _matching(_downloaded(ctx) + catalog, incomplete)


def complete_deployments(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """TARGET of stop/logs: the model names and short ids of the deployments `ps` shows."""
    deployments = _get_json(ctx, "/serving/deployments")
    if not isinstance(deployments, list):
        return []
    names: list[CompletionItem] = []
    ids: list[CompletionItem] = []
    for d in deployments:  # the ones `kamiwaza ps` shows by default
        if not isinstance(d, dict) or d.get("status") not in statuses.LIVE or not d.get("id"):
            continue
        short = str(d["id"])[:8]
        status = str(d.get("status") or "").lower()
        if d.get("m_name"):
            names.append(CompletionItem(str(d["m_name"]), help=f"{status} deployment {short}"))
        ids.append(CompletionItem(short, help=f"{d.get('m_name') or 'deployment'} ({status})"))
    names.sort(key=lambda i: str(i.value).lower())
    return _matching(names + ids, incomplete)
