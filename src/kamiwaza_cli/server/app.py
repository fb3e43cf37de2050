"""The local server's FastAPI application: state, middleware and routes put together.

``create_app`` builds the shared ``ServerContext``, whose store, downloads, supervisor,
deployment ports and gateway the lifespan starts and stops; the Guard middleware (body limits, authentication)
in front of everything; and the route modules of ``routes/``, registered in a fixed order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI

from .. import __version__
from .auth import LocalAuth
from .downloads import DownloadManager
from .gateway import Gateway
from .guard import Guard
from .ports import DeploymentPorts
from .routes import auth, configs, files, models, ping, runtime, serving
from .routes.context import ServerContext
from .store import Store
from .supervisor import Supervisor

# Registration order is the order routes are matched in (and listed in /openapi.json).
_ROUTES: tuple[Callable[[APIRouter, ServerContext], None], ...] = (
    auth.add_routes,
    ping.add_routes,
    models.add_routes,
    files.add_routes,
    configs.add_routes,
    serving.add_routes,
    runtime.add_routes,
)


def create_app(
    home: Path,
    api_key: str | None = None,
    *,
    host: str = "127.0.0.1",
    tls: dict[str, str | None] | None = None,
) -> FastAPI:
    """The server's app; ``host`` and ``tls`` are the API port's, which deployment ports share."""
    ctx = ServerContext(auth=LocalAuth.from_env(home, api_key))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.store = Store(home)
        ctx.downloads = DownloadManager(ctx.store)
        ports = DeploymentPorts(app, asyncio.get_running_loop(), host, tls or {})
        ctx.supervisor = Supervisor(ctx.store, home / "logs" / "deployments", ports)
        ctx.gateway = Gateway()
        ctx.downloads.resume_interrupted()
        ctx.supervisor.start()
        yield
        ctx.supervisor.shutdown()
        ctx.downloads.shutdown()
        await ctx.gateway.close()
        ctx.store.close()

    app = FastAPI(title="Kamiwaza local server", version=__version__, lifespan=lifespan)
    app.add_middleware(Guard, auth=ctx.auth)
    # Onto the app's own router, exactly as @app.get would. Not include_router: recent FastAPI (0.165)
    # adds one lazily matched branch per router instead of its routes, which changes app.routes and
    # puts an extra matching layer in front of every request.
    for add_routes in _ROUTES:
        add_routes(app.router, ctx)
    return app
