"""The ``kamiwaza`` command group and the CLI's single error boundary.

Commands raise ``KamiwazaError``s; ``main`` prints ``Error: <message>`` and the
next step on stderr and exits with the error's code (errors.py). Tracebacks only
with ``--debug`` / ``KAMIWAZA_DEBUG=1``. Nothing heavy is imported here: ``--help``
and ``config`` must not pay for the SDK.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from .. import __version__, sdkimport
from .. import config as settings
from ..errors import EXIT_ERROR, EXIT_INTERRUPTED, Detached, KamiwazaError
from ..textsafe import safe_text
from . import output

# The SDK imports openai eagerly; only streaming commands use it (sdkimport.py defers it).
sdkimport.install()

_ENV_WIDTH = max(len(s.env) for s in settings.SETTINGS.values())
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

EPILOG = """\b
Examples:
  kamiwaza run qwen2.5-0.5b-instruct         pull + serve if needed, then chat
  kamiwaza serve qwen2.5-0.5b-instruct       deploy as an OpenAI-compatible API
  kamiwaza pull qwen2.5-0.5b-instruct        download (in the platform), with progress
  kamiwaza pull ./model-Q4_K_M.gguf          register a local GGUF file
  kamiwaza list                              downloaded models
  kamiwaza show qwen2.5-0.5b-instruct        files, quantizations, GGUF facts
  kamiwaza config set-url https://HOST/api   use a Kamiwaza cluster instead

\b
Environment:
""" + "\n".join(f"  {s.env:<{_ENV_WIDTH}} {s.help}" for s in settings.SETTINGS.values())


# Errors of the local state directory: the user's to fix, not a bug to report.
_STATE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def report(exc: BaseException, debug: bool) -> int:
    """Print one error the way every command does; return its exit code.

    Messages carry the platform's details (names, engine log lines): escaped, each stays one line."""
    if debug:
        import traceback  # only here: it costs --help ~8 ms

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if isinstance(exc, KamiwazaError):
        print(f"Error: {safe_text(exc.message)}", file=sys.stderr)
        for line in getattr(exc, "log_lines", []):
            print(f"  | {safe_text(line)}", file=sys.stderr)
        if exc.hint:
            print(f"  → {safe_text(exc.hint)}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno in _STATE_ERRNOS:
        where = safe_text(exc.filename or "a file it needs")
        print(f"Error: cannot write {where}: {exc.strerror}", file=sys.stderr)
        print("  → fix its permissions or free space, or use another directory with KAMIWAZA_HOME=DIR", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        if not isinstance(exc, Detached):  # a detached command has said what goes on without it
            print("\nInterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"Error: unexpected {type(exc).__name__}: {safe_text(exc)}", file=sys.stderr)
    print("  → run again with --debug for the traceback, and report it", file=sys.stderr)
    return EXIT_ERROR


# name -> (module in cli/, attribute, the one line `kamiwaza --help` shows; a test keeps it equal to
# the command's own docstring).
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "pull": ("models", "pull", "Download MODEL into the platform, with a progress bar per file."),
    "list": ("models", "list_models", "List the models downloaded to the platform (alias: ls)."),
    "show": ("models", "show", "Show a downloaded MODEL: files, quantizations, configs and GGUF facts."),
    "rm": ("models", "rm", "Remove downloaded MODELS and their files from the platform."),
    "serve": ("serving", "serve", "Deploy MODEL as an OpenAI-compatible API and print its endpoint."),
    "ps": ("serving", "ps", "List deployments: running, starting and failed (stopped ones with --all)."),
    "stop": ("serving", "stop", "Stop the deployment(s) of a MODEL, or one deployment by ID (prefix)."),
    "logs": ("serving", "logs", "Print the engine log of a MODEL's deployment, or of one deployment by ID."),
    "run": ("run", "run", "Chat with MODEL (pulling and serving it first if needed), or answer PROMPT once."),
    "login": ("auth_cmd", "login", "Log in to the platform and keep its tokens for the next commands."),
    "logout": ("auth_cmd", "logout", "Forget the tokens stored for the platform."),
    "whoami": ("auth_cmd", "whoami", "Show who the platform thinks you are."),
    "token": ("token_cmd", "token", "Personal access tokens: for scripts and other machines, revocable one by one."),
    "config": ("config_cmd", "config", "Show and change settings ($KAMIWAZA_HOME/config.json)."),
    "server": ("server_cmd", "server", "The embedded local server (a single-node Kamiwaza API on this machine)."),
    "completion": ("completion", "completion", "Print the shell completion script for SHELL (bash, zsh or fish)."),
}


class KamiwazaGroup(click.Group):
    """The error boundary: every command's exceptions end here as a message and an exit code."""

    aliases = {"ls": "list"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.aliases.get(cmd_name, cmd_name)
        if name not in self.commands and name in LAZY_COMMANDS:
            # Import a command's module only when it runs: start-up stays at click's own cost.
            module, attribute, _ = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(f"{__package__}.{module}"), attribute), name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, LAZY_COMMANDS[name][2]) for name in self.list_commands(ctx) if name in LAZY_COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except BrokenPipeError:
            # stdout closed by `| head`: not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except (KamiwazaError, KeyboardInterrupt, click.exceptions.Abort, Exception) as exc:
            try:
                debug = settings.debug_enabled()
            except KamiwazaError:  # the config file itself is what is broken
                debug = False
            debug = debug or bool(ctx.obj and ctx.obj.debug)
            raise click.exceptions.Exit(report(exc, debug)) from None


class Context:
    """The global flags every command connects with."""

    def __init__(
        self,
        url: str | None,
        debug: bool,
        platform: str | None = None,
        insecure: bool = False,
        ca_bundle: str | None = None,
    ) -> None:
        self.url = url
        self.debug = debug
        self.platform = platform
        self.insecure = insecure
        self.ca_bundle = ca_bundle


@click.group(cls=KamiwazaGroup, context_settings=CONTEXT_SETTINGS, epilog=EPILOG)
@click.option("--url", metavar="URL", help="Platform API URL (overrides KAMIWAZA_BASE_URL and the config file).")
@click.option(
    "--platform",
    "-p",
    "platform_name",
    metavar="NAME",
    help="Use a named platform from the config file (`local` is the embedded server).",
)
@click.option("--insecure", is_flag=True, help="Don't verify the platform's TLS certificate.")
@click.option("--ca-bundle", metavar="FILE", help="Verify the platform's TLS certificate with this CA bundle.")
@click.option("--quiet", "-q", is_flag=True, help="Only print data and errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks and HTTP requests.")
@click.version_option(__version__, "--version", "-V", prog_name="kamiwaza")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str | None,
    platform_name: str | None,
    insecure: bool,
    ca_bundle: str | None,
    quiet: bool,
    debug: bool,
) -> None:
    """kamiwaza: pull, serve and chat with models on the Kamiwaza platform.

    With no URL configured, commands use the embedded local server
    (http://127.0.0.1:7777/api), starting it when needed.
    """
    output.start(ctx, quiet)
    # --debug reaches commands in ctx.obj (Context.debug), never through the environment.
    ctx.obj = Context(url, debug or settings.debug_enabled(), platform_name, insecure, ca_bundle)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="kamiwaza")
