"""A peering object this operator may no longer write is fatal, not something to retry.

kopf retries every 403 of its peering keep-alive for about a minute (its `error_backoffs`,
because RBAC can blip while a cluster upgrades), then gives up on peering and runs on; its
goodbye at shutdown retries the same way. When `helm upgrade` switches `operator.watch.mode`,
the old pod's grant on its peering object goes away with the old RBAC: it retried the PATCH
until the kubelet killed it 30 s later. Here a 403 that persists for FORBIDDEN_BACKOFFS on this
replica's own peering object stops the operator with one clear log line and exit status
EXIT_FORBIDDEN (the kubelet restarts it if the pod is still wanted), and the goodbye is tried
once. Other failures keep kopf's own patience.

This wraps two of kopf's internal functions (kopf._core.engines.peering.touch and clean, which
all its peering writes go through); tests/chart/test_operator_rbac_switch.py checks the result
on a real API server, so a kopf upgrade that moves them fails there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kopf._cogs.clients import errors
from kopf._cogs.configs.configuration import OperatorSettings
from kopf._core.engines import peering as kopf_peering

logger = logging.getLogger("embedding_proxy_operator.io.peering")

# Retries of a 403 on the own peering object (seconds between them), before it counts as lasting.
FORBIDDEN_BACKOFFS = (1.0, 2.0, 4.0)
EXIT_FORBIDDEN = 3
TRANSIENT = (
    errors.APIServerError,
    errors.APITooManyRequestsError,
    aiohttp.ClientConnectionError,
    TimeoutError,
)


def _with_backoffs(settings: OperatorSettings, backoffs: tuple[float, ...]) -> OperatorSettings:
    networking = dataclasses.replace(settings.networking, error_backoffs=backoffs)
    return dataclasses.replace(settings, networking=networking)


class Guard:
    """Wraps kopf's peering writes; knows whether it stopped the operator."""

    def __init__(self) -> None:
        self.forbidden = False

    def wrap(self, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def guarded(*, settings: OperatorSettings, **kwargs: Any) -> Any:
            if self.forbidden:
                return None  # stopping already: nothing more to say to a peering we may not write
            goodbye = kwargs.get("lifetime") == 0
            try:
                # The goodbye is tried once: the operator is stopping anyway.
                backoffs = () if goodbye else FORBIDDEN_BACKOFFS
                return await original(settings=_with_backoffs(settings, backoffs), **kwargs)
            except errors.APIForbiddenError as e:
                reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
                if goodbye:
                    logger.warning(f"Left the peering without a goodbye: {reason}")
                    return None
                self.forbidden = True
                where = kwargs.get("namespace") or "cluster-wide"
                plural = getattr(kwargs.get("resource"), "plural", "peering")
                logger.critical(
                    f"Stopping: this operator may no longer patch its peering object "
                    f"{plural}/{settings.peering.name} ({where}): {reason}. Its RBAC changed (a "
                    f"`helm upgrade` that switched operator.watch.mode replaces this pod); "
                    f"exiting with status {EXIT_FORBIDDEN}."
                )
                os.kill(os.getpid(), signal.SIGTERM)  # kopf's own graceful stop
                return None
            except TRANSIENT:
                if goodbye:
                    raise
                # Not a permission problem: kopf's full retry policy, as without this guard.
                return await original(settings=settings, **kwargs)

        guarded.__wrapped__ = original  # type: ignore[attr-defined]
        return guarded


def install() -> Guard:
    """Put a new guard around kopf's peering writes (its keep-alive and the cleaning of dead
    peers), in place of any earlier one."""
    guard = Guard()
    for name in ("touch", "clean"):
        current = getattr(kopf_peering, name, None)
        if current is None:  # kopf's internals moved: run with its own behaviour
            logger.warning(f"kopf has no peering.{name}: forbidden peering writes retry as in kopf")
            continue
        setattr(kopf_peering, name, guard.wrap(getattr(current, "__wrapped__", current)))
    return guard
