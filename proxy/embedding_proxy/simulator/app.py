"""The simulator's HTTP API: TEI's routes (embed_routes.py, score_routes.py, tei_routes.py,
vertex.py) for the model type served, their shapes, status codes and headers, TEI's CORS and API
key (layers.py), plus the simulator's own `/simulator/*` routes for tests (control.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..failure import cannot_listen
from . import control, embed_routes, layers, models, score_routes, tei_routes, vertex
from .errors import Rejection, TeiError
from .pipeline import SIMULATOR_KEY, Simulator
from .settings import SimulatorSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Callable[[Simulator, web.Request], Awaitable[web.StreamResponse]]


def _tei_route(sim: Simulator, handler: Route, *, openai: bool = False) -> Handler:
    """Render TEI errors in the route's shape, and extractor rejections as plain text."""
    before_1_9 = sim.settings.before_1_9

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(sim, request)
        except Rejection as e:
            return web.Response(status=e.status, text=e.text)
        except TeiError as e:
            status = e.status_for(before_1_9)
            body = e.openai_body(status) if openai else e.native_body()
            return web.Response(status=status, body=body, content_type="application/json")

    return route


def _bound(sim: Simulator, handler: Route) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(sim, request)

    return route


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (its engine starts and stops with the app)."""
    sim = Simulator(settings)
    # Bodies are read and limited by the handlers, as TEI limits them (see read_json).
    middlewares = [layers.cors, layers.observe, layers.api_key, control.faults]
    app = web.Application(middlewares=middlewares, client_max_size=1 << 40)
    app[SIMULATOR_KEY] = sim

    async def start(app: web.Application) -> None:
        sim.engine.start()

    async def stop(app: web.Application) -> None:
        await sim.engine.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    e, c, t = embed_routes, score_routes, tei_routes
    native: dict[str, Route] = {
        "/embed": e.embed,
        "/embed_all": e.embed_all,
        "/embed_sparse": e.embed_sparse,
        "/predict": c.predict,
        "/rerank": c.rerank,
        "/similarity": e.similarity,
        "/tokenize": t.tokenize,
        "/decode": t.decode,
        "/vertex": vertex.vertex,
    }
    # `POST /` and `/invocations` run the route of the model type served.
    default = native[models.DEFAULT_ROUTE[settings.model_type]]
    native.update({"/": default, "/invocations": default})
    for path, handler in native.items():
        app.router.add_post(path, _tei_route(sim, handler))
    for path in ("/v1/embeddings", "/embeddings"):
        app.router.add_post(path, _tei_route(sim, e.openai_embed, openai=True))
    # axum answers HEAD on every GET route, with the GET's headers and no body.
    for path in ("/health", "/", "/ping"):
        app.router.add_get(path, _bound(sim, t.health))
    app.router.add_get("/info", _bound(sim, t.info))
    app.router.add_get("/metrics", _bound(sim, t.prometheus))
    app.router.add_get("/simulator/faults", _bound(sim, control.get_faults))
    app.router.add_post("/simulator/faults", _bound(sim, control.set_fault))
    app.router.add_delete("/simulator/faults", _bound(sim, control.clear_fault))
    app.router.add_get("/simulator/stats", _bound(sim, control.get_stats))
    app.router.add_delete("/simulator/stats", _bound(sim, control.reset_stats))
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
