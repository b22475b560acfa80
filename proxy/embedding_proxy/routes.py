"""The two ports' dispatch tables: which of the proxy's handlers answers which method and path
(everything else is forwarded to TEI), the request id echoed, and the access log around them."""

from __future__ import annotations

import functools
import time

from . import doors
from .api import tei as tei_api
from .api.errors import ProxyError
from .app import Proxy
from .http.message import Answer, Handler, Request, Response, settle, then
from .respond import responder
from .telemetry import logs


def api_handler(proxy: Proxy, with_metrics: bool = True) -> Handler:
    """The API port: TEI's and OpenAI's routes, health, readiness, and metrics unless they are
    served apart; every other route is forwarded to TEI. A plain dispatch table: the proxy has no
    use for a general router."""
    posts: dict[str, Handler] = dict.fromkeys(tei_api.BATCH_ROUTES, proxy.handle_tei)
    posts["/v1/embeddings"] = proxy.handle_openai
    # TEI's other doors to the same work (doors.py): OpenAI clients whose base URL lacks /v1,
    # the Hugging Face clients and SageMaker (/, /invocations), Vertex AI.
    posts["/embeddings"] = proxy.handle_openai_bare
    tei_error = ProxyError.tei_body
    for path, work in (
        ("/", doors.root),
        ("/invocations", doors.root),
        ("/vertex", doors.vertex),
    ):
        posts[path] = responder(functools.partial(work, proxy), tei_error, *proxy.tally)
    gets: dict[str, Handler] = {
        "/health": proxy.handle_health,
        "/ready": proxy.handle_ready,
        "/v1/models": functools.partial(doors.models, proxy),
    }
    gets["/models"] = gets["/v1/models"]  # for OpenAI clients whose base URL lacks /v1
    # With a metrics port, /metrics here is not forwarded either: TEI's metrics under the proxy's
    # name would mislead a scraper pointed at the wrong port.
    gets["/metrics"] = proxy.handle_metrics if with_metrics else proxy.handle_metrics_elsewhere
    # HEAD of the proxy's own routes: as GET, the server leaves the body out. Others: to TEI.
    # Any OPTIONS request is a preflight, answered by the proxy as TEI's CORS layer answers it.
    preflight = proxy.cors.preflight

    async def options(request: Request) -> Response:
        return preflight(request)

    routes = {"POST": posts, "GET": gets, "HEAD": gets}
    forward = responder(functools.partial(doors.forward, proxy), tei_error, *proxy.tally, "other")
    model = functools.partial(doors.model, proxy)
    listed = proxy.cors.listed is not None

    def elsewhere(request: Request) -> Handler:
        """A route outside the tables: a preflight, OpenAI's one model, or TEI's."""
        if request.method == "OPTIONS":
            return options
        if request.method in ("GET", "HEAD") and request.path.startswith(doors.MODELS):
            return model
        return forward

    def decorate(request: Request, response: Response, given: str | None) -> Response:
        if listed:  # a list of origins: the caller's, when on it (any origin: Server's `always`)
            response.lines += proxy.cors.origin_line(request)
        if given is not None:
            _echo_id(response, logs.request_id(given))
        return response

    def handle(request: Request) -> Answer:
        table = routes.get(request.method)
        handler = table.get(request.path) if table is not None else None
        if handler is None:
            handler = elsewhere(request)
        answer = handler(request)
        given = request.headers.get(logs.REQUEST_ID)
        if listed or given is not None:
            return then(answer, lambda response: decorate(request, response, given))
        return answer

    if not proxy.config.server.access_log:
        return handle
    # Probes and scrapes would drown the requests that matter.
    quiet = frozenset({"/health", "/ready", "/metrics"})

    async def handle_logged(request: Request) -> Response:
        if request.path in quiet:
            return await settle(handle(request))
        started = time.perf_counter()
        access = logs.start_access()
        response = await settle(handle(request))
        rid = logs.request_id(request.headers.get(logs.REQUEST_ID))
        _echo_id(response, rid)
        logs.log_access(request.method, request.path, response.status, rid, access, started)
        return response

    return handle_logged


def _echo_id(response: Response, rid: str) -> None:
    # Copied, not changed in place: error responses may share their headers. A forwarded answer's
    # are a list (repeated headers kept); its own X-Request-Id, if any, gives way to ours.
    headers = response.headers or {}
    pairs = headers.items() if isinstance(headers, dict) else headers
    response.headers = [(k, v) for k, v in pairs if k.lower() != "x-request-id"]
    response.headers.append(("X-Request-Id", rid))


def metrics_handler(proxy: Proxy) -> Handler:
    """The separate metrics port: /metrics and /health only."""
    gets: dict[str, Handler] = {"/metrics": proxy.handle_metrics, "/health": proxy.handle_health}

    async def handle(request: Request) -> Response:
        handler = gets.get(request.path) if request.method in ("GET", "HEAD") else None
        if handler is None:
            return Response(404, b"metrics port: GET /metrics\n", "text/plain; charset=utf-8")
        return await handler(request)

    return handle
