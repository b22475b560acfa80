"""Exactly one replica acts: the one holding the Lease (`io.leader`).

kopf's start-up handlers run before any of its watches, so the start-up waits here until this
replica holds the Lease; a standby meanwhile answers its liveness probe from a server of its own
(kopf's starts only after the start-up), watches nothing and writes nothing but its attempts on
the Lease. Once leading, the Lease is renewed in the background, every write of the process is
fenced by it, and a deliberate stop gives it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web

from ..cli import liveness_url
from ..io.leader import Elector, fence_kopf
from ..model import names
from .state import State

# kopf's default when --liveness names no path.
DEFAULT_PORT = 80


def identity(environ: Mapping[str, str]) -> str:
    """This replica's name in the Lease: its pod's (the downward API), else host and process."""
    for key in ("POD_ID", "POD_NAME"):
        if environ.get(key):
            return environ[key]
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.asynccontextmanager
async def standby_liveness(url: str | None, elector: Elector) -> AsyncIterator[None]:
    """Answer the liveness probe where kopf will, until kopf takes the port over: a standby is
    alive, and must not be restarted for waiting."""
    if not url:
        yield
        return
    parts = urlsplit(url)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": {"leaseHolder": elector.observed.holder}})

    app = web.Application()
    app.router.add_get(parts.path or "/", alive)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT).start()
    try:
        yield
    finally:
        await runner.cleanup()


def find_credentials(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The credentials to log in with: kopf's own ways, in the order kopf tries them."""
    info: kopf.ConnectionInfo | None = None
    try:
        info = kopf.login_via_client(**kwargs)
    except kopf.LoginError:
        info = None
    return info or kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def credentials(settings: kopf.OperatorSettings, logger: logging.Logger) -> kopf.ConnectionInfo:
    """The Lease's own login: kopf logs in only once the start-up is over."""
    info = find_credentials(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no credentials for the Kubernetes API")
    return info


async def lead(state: State, settings: kopf.OperatorSettings, logger: logging.Logger) -> None:
    """Return once this replica holds the Lease, renewing it from then on."""
    options = state.options
    elector = state.elector = Elector(
        identity=identity(os.environ),
        namespace=options.lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
        name=options.lease_name,
        timing=options.lease,
        connect=lambda: credentials(settings, logger),
        api_timeout=min(options.api_timeout_seconds, options.lease.renew_deadline_seconds),
        logger=logging.getLogger(f"{names.FIELD_MANAGER}.leader"),
    )
    fence_kopf(elector.fence)
    async with standby_liveness(liveness_url(sys.argv[1:]), elector):
        await elector.acquire()
    elector.start_keeping()


async def step_down(state: State) -> None:
    """At a deliberate stop, once kopf's handlers are done: give the Lease back."""
    if state.elector is not None:
        await state.elector.stop_keeping()
        await state.elector.release()
        await state.elector.close()
