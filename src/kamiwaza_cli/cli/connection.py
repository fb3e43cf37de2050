"""How a command reaches its platform: ``connect(ctx)``, from the global flags in ``ctx.obj``.

The one way commands get a ``Platform``. Tests hand in their own (a FakePlatform) through the
click context's meta, so nothing global is patched.
"""

from __future__ import annotations

import click

from .. import workflows
from . import output

PLATFORM_FACTORY = "kamiwaza.platform_factory"
"""Key in ``click.Context.meta`` of a function (context, anonymous) -> Platform used instead of
``workflows.connect``: how the tests run commands against a FakePlatform (a parent context given to
``CliRunner.invoke(..., parent=ctx)`` shares its meta with the command's)."""


def connect(ctx: click.Context, anonymous: bool = False, autostart: bool = True) -> workflows.Platform:
    """The platform the global flags name, the local server started if it is the one and is down.

    ``anonymous``: without the stored session (login must not be stopped by an expired one).
    ``autostart=False``: a local server that is down stays down (logout needs none)."""
    factory = ctx.meta.get(PLATFORM_FACTORY)
    if factory is not None:
        injected: workflows.Platform = factory(ctx, anonymous)
        return injected
    o = ctx.obj
    platform, started = workflows.connect(
        o.url,
        platform_flag=o.platform,
        insecure=o.insecure,
        ca_bundle=o.ca_bundle,
        anonymous=anonymous,
        debug=o.debug,
        autostart=autostart,
    )
    out = output.of(ctx)
    if not platform.verify:
        out.warning(f"Warning: TLS certificate verification is off for {platform.url}")
    if started:
        out.info(f"Started the local server at {started.url}")
    return platform
