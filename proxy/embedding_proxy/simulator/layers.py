"""What TEI's router wraps around its routes (router/src/http/server.rs, `run`), as aiohttp
middlewares: CORS outermost, the API key on the inference routes, and the simulator's own count of
answers by route and status.

CORS is tower-http's `CorsLayer` (0.5) as TEI configures it: methods GET and POST, header
`content-type`, origins any (`*`) unless `--cors-allow-origin` lists them (then a listed request
`Origin` is echoed, and an unlisted one gets no `Access-Control-Allow-Origin`). The layer answers
every OPTIONS request itself, 200 with an empty body, before the API key is asked for; every other
answer, errors included, carries the origin header and `Vary`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .control import INFERENCE_ROUTES
from .pipeline import SIMULATOR_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_VARY = "origin, access-control-request-method, access-control-request-headers"
# TEI's public routes (health, metrics) answer without the API key; everything else it routes
# (`POST /` included) asks for it. Paths TEI does not route answer 404 without asking.
PUBLIC = frozenset({"/health", "/", "/ping", "/metrics"})
KEYED = INFERENCE_ROUTES | {"/info"}


def _allow_origin(request: web.Request) -> str | None:
    allowed = request.app[SIMULATOR_KEY].settings.cors_allow_origin
    if not allowed or "*" in allowed:
        return "*"
    origin = request.headers.get("Origin")
    return origin if origin in allowed else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = _allow_origin(request)
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200)
        response.headers["Access-Control-Allow-Methods"] = "GET,POST"
        response.headers["Access-Control-Allow-Headers"] = "content-type"
    else:
        response = await handler(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
    response.headers.add("Vary", _VARY)
    return response


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[SIMULATOR_KEY].settings.api_key
    public = request.method in ("GET", "HEAD") and request.path in PUBLIC
    if (
        key is not None
        and request.path in KEYED
        and not public
        and request.headers.get("Authorization") != f"Bearer {key}"
    ):
        return web.Response(status=401)
    return await handler(request)


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
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
