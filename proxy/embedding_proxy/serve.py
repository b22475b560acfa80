"""Run the proxy: listen, handle signals (SIGTERM drains, SIGHUP reloads), stop cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from .app import Proxy, create_metrics_server, create_server
from .config import Config

log = logging.getLogger("embedding_proxy")


async def serve(
    config: Config,
    reload: Callable[[], Config] | None = None,
    config_path: Path | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    server = config.server
    proxy = Proxy(config, reload)
    await proxy.start(config_path)
    runners: list[web.ServerRunner] = []
    separate_metrics = server.metrics_port is not None
    servers = [(create_server(proxy, with_metrics=not separate_metrics), server.port)]
    if server.metrics_port is not None:
        servers.append((create_metrics_server(proxy), server.metrics_port))
    for web_server, port in servers:
        runner = web.ServerRunner(web_server, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        await web.TCPSite(runner, server.host, port, backlog=4096).start()
        runners.append(runner)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if proxy.watcher is not None:
        loop.add_signal_handler(signal.SIGHUP, proxy.watcher.reload)
    log.info(
        "embedding-proxy listening on %s:%d (metrics on %s), upstream %s",
        server.host,
        server.port,
        server.metrics_port or server.port,
        config.upstream.url,
    )
    if started is not None:
        started()
    try:
        await stop.wait()
        log.info("signal received: draining")
        await proxy.shutdown()
    finally:
        for runner in runners:
            await runner.cleanup()
        await proxy.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log.info("stopped")


def run(coro_factory: Callable[[], object]) -> None:
    """Run a coroutine on uvloop where it is installed."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_factory())  # type: ignore[arg-type]
