"""Run the proxy: listen, handle signals (SIGTERM drains and exits, SIGUSR1 drains and stays up
until SIGTERM, SIGHUP reloads), stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from .api.errors import ProxyError
from .app import Proxy
from .config.redaction import redact
from .config.settings import Config
from .failure import cannot_listen
from .http.message import Handler, Limits, Request, Response, Vet, settle
from .http.server import Server
from .routes import api_handler, metrics_handler

log = logging.getLogger("embedding_proxy")


async def serve(
    config: Config,
    reload: Callable[[], Config] | None = None,
    config_path: Path | None = None,
    started: Callable[[], None] | None = None,
    make_proxy: Callable[[Config, Callable[[], Config] | None], Proxy] = Proxy,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return. A worker process (worker.py)
    passes its own kind of proxy and shares the ports with its siblings."""
    server = config.server
    proxy = make_proxy(config, reload)
    listeners = [(server.port, api_handler(proxy, with_metrics=server.metrics_port is None))]
    if server.metrics_port is not None:
        listeners.append((server.metrics_port, metrics_handler(proxy)))
    limits = Limits(
        max_body_bytes=server.max_body_bytes,
        max_head_bytes=server.max_head_bytes,
        max_header_count=server.max_header_count,
        head_timeout=server.head_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        keepalive_timeout=server.keepalive_seconds,
        send_timeout=server.send_timeout_seconds,
        max_connections=server.max_connections,
        max_body_buffer_bytes=server.max_body_buffer_bytes,
        max_answer_buffer_bytes=server.max_answer_buffer_bytes,
        probe_paths=frozenset({"/health", "/ready"}),  # the kubelet's, whatever peers do
    )
    # The ports first, so that a busy one stops start-up before anything else happens (and
    # logs); until the proxy has started, requests wait for it.
    started_up = asyncio.Event()
    servers: list[Server] = []
    for port, handler in listeners:
        api = port == server.port
        vet = _key_check(proxy) if api else None
        always = proxy.cors.always if api else b""  # TEI's CORS on its API port
        http_server = Server(_after(started_up, handler), limits, vet, always)
        try:
            await http_server.start(server.host, port, reuse_port=reuse_port)
        except OSError as e:
            for started_server in servers:
                await started_server.close()
            flag = "--port" if port == server.port else "--metrics-port"
            raise cannot_listen(server.host, port, e, flag) from None
        servers.append(http_server)
    await proxy.start(config_path)
    for http_server, (_, handler) in zip(servers, listeners, strict=True):
        http_server.handler = handler  # from now on without the wait
    started_up.set()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def begin_drain() -> None:
        for http_server in servers:
            http_server.drain()  # each connection ends after answering what it has sent
        proxy.begin_drain()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # From the preStop hook (`embedding-proxy drain`) of a native sidecar, whose SIGTERM comes
    # only after TEI has exited.
    loop.add_signal_handler(signal.SIGUSR1, begin_drain)
    if proxy.watcher is not None:
        loop.add_signal_handler(signal.SIGHUP, proxy.watcher.reload)
    log.info(
        "embedding-proxy listening on %s:%d (metrics on %s), upstream %s",
        server.host,
        server.port,
        server.metrics_port or server.port,
        redact(config.upstream.url),
    )
    if config.upstream.api_key_file is not None and proxy.upstream.url_auth is not None:
        log.warning("upstream: upstream.api_key_file is sent; the URL's credentials are not")
    if started is not None:
        started()
    try:
        await stop.wait()
        log.info("signal received: draining")
        begin_drain()
        await proxy.shutdown()
    finally:
        for http_server in servers:
            await http_server.close()
        await proxy.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def _key_check(proxy: Proxy) -> Vet:
    """With API keys on (the proxy's own, or the upstream's lent to callers who hold them), a
    request with a body and no valid key gets its 401 from the head alone: its body is never
    read. /health, /ready and /metrics take no key."""
    open_paths = frozenset({"/health", "/ready", "/metrics"})

    def vet(request: Request) -> Response | None:
        if not (proxy.keys.enabled or proxy.upstream.guarded) or request.path in open_paths:
            return None
        try:
            proxy.check_key(request.headers.get("authorization"))
        except ProxyError as e:
            openai = request.path in ("/v1/embeddings", "/embeddings")
            body = e.openai_body() if openai else e.tei_body()
            lines = proxy.cors.origin_line(request)
            return Response(e.status, body, "application/json", e.headers, lines)
        return None

    return vet


def _after(event: asyncio.Event, handler: Handler) -> Handler:
    async def wait_then_handle(request: Request) -> Response:
        await event.wait()
        return await settle(handler(request))

    return wait_then_handle


def run(coro_factory: Callable[[], object]) -> None:
    """Run a coroutine on uvloop where it is installed."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_factory())  # type: ignore[arg-type]
