"""The simulator's HTTP API: TEI's routes (tei_routes.py), shapes, status codes and headers, its
API key and route metrics, plus its own `/simulator/*` routes for tests (control.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..failure import cannot_listen
from . import control, tei_routes
from .errors import Rejection, TeiError
from .pipeline import SIMULATOR_KEY, Simulator
from .settings import SimulatorSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Callable[[Simulator, web.Request], Awaitable[web.StreamResponse]]

# TEI asks for the API key everywhere but on its health and metrics routes.
PUBLIC_ROUTES = frozenset({"/health", "/", "/ping", "/metrics"})


def _tei_route(sim: Simulator, handler: Route, *, openai: bool = False) -> Handler:
    """Render TEI errors in the route's shape, and extractor rejections as plain text."""

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(sim, request)
        except Rejection as e:
            return web.Response(status=e.status, text=e.text)
        except TeiError as e:
            body = e.openai_body() if openai else e.native_body()
            return web.Response(status=e.status, body=body, content_type="application/json")

    return route


def _bound(sim: Simulator, handler: Route) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(sim, request)

    return route


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route and status; unknown routes get axum's empty 404/405."""
    sim = request.app[SIMULATOR_KEY]
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed as e:
        response = web.Response(status=405, headers={"Allow": ",".join(sorted(e.allowed_methods))})
    except web.HTTPNotFound:
        response = web.Response(status=404)
    sim.metrics.requests.labels(_route_label(request), str(response.status)).inc()
    return response


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[SIMULATOR_KEY].settings.api_key
    if (
        key is not None
        and request.path not in PUBLIC_ROUTES
        and not request.path.startswith("/simulator/")
        and request.headers.get("Authorization") != f"Bearer {key}"
    ):
        return web.Response(status=401)
    return await handler(request)


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (its engine starts and stops with the app)."""
    sim = Simulator(settings)
    # Bodies are read and limited by the handlers, as TEI limits them (see read_json).
    app = web.Application(middlewares=[_observe, _auth, control.faults], client_max_size=1 << 40)
    app[SIMULATOR_KEY] = sim

    async def start(app: web.Application) -> None:
        sim.engine.start()

    async def stop(app: web.Application) -> None:
        await sim.engine.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    t = tei_routes
    native: dict[str, Route] = {
        "/embed": t.embed,
        "/": t.embed,
        "/invocations": t.embed,
        "/embed_all": t.embed_all,
        "/embed_sparse": t.embed_sparse,
        "/predict": t.predict,
        "/rerank": t.rerank,
        "/similarity": t.similarity,
        "/tokenize": t.tokenize,
        "/decode": t.decode,
    }
    for path, handler in native.items():
        app.router.add_post(path, _tei_route(sim, handler))
    for path in ("/v1/embeddings", "/embeddings"):
        app.router.add_post(path, _tei_route(sim, t.openai_embed, openai=True))
    for path in ("/health", "/", "/ping"):
        app.router.add_get(path, _bound(sim, t.health), allow_head=False)
    app.router.add_get("/info", _bound(sim, t.info), allow_head=False)
    app.router.add_get("/metrics", _bound(sim, t.prometheus), allow_head=False)
    c = control
    app.router.add_get("/simulator/faults", _bound(sim, c.get_faults))
    app.router.add_post("/simulator/faults", _bound(sim, c.set_fault))
    app.router.add_delete("/simulator/faults", _bound(sim, c.clear_fault))
    app.router.add_get("/simulator/stats", _bound(sim, c.get_stats))
    app.router.add_delete("/simulator/stats", _bound(sim, c.reset_stats))
    return app


def run(settings: SimulatorSettings) -> None:
    """Run the simulator until SIGINT or SIGTERM.

    Handlers are cancelled when their client disconnects (aiohttp's `handler_cancellation`), so
    that, as in TEI, inputs of a caller that left are never computed.
    """

    def listening(_: str) -> None:  # aiohttp calls this once the port is bound
        logging.getLogger("embedding_proxy.simulator").info(
            "TEI simulator (not a real model) listening on http://%s:%d",
            settings.host,
            settings.port,
        )

    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            print=listening,
            handler_cancellation=True,
        )
    except OSError as e:
        raise cannot_listen(settings.host, settings.port, e) from None


async def serve(settings: SimulatorSettings) -> None:
    """Run the simulator until cancelled (with `run`'s handler cancellation)."""
    runner = web.AppRunner(create_app(settings), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
