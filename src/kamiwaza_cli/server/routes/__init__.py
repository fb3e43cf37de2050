"""HTTP routes of the local server, one module per area, with the platform's exact paths and JSON shapes.

Each module has an ``add_routes(api, ctx)`` that registers its routes on the app's router over
the shared ``ServerContext`` (context.py); ``app.py`` calls them in a fixed order. Routes only
translate HTTP <-> domain: request bodies in, store rows and download progress out in the
shapes of kamiwaza-api.md (shapes.py). Trailing slashes are registered exactly as the SDK sends them
(FastAPI would otherwise answer 307).

The hot read-only routes (ping, the model list, the deployment list) are ``async``: a sync
route costs a hop to the thread pool, which under 32 clients on 2 cores is most of a request's
time (docs/benchmarks.md, api). The token route and the runtime gateway are ``async`` because
they await the request body or the engine; every other route is a plain ``def`` on purpose.
"""
