"""The guard around kopf's peering writes, without an API server: which retry policy each write
gets. tests/chart/test_operator_rbac_switch.py shows the whole of it on a real one."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import errors

from embedding_proxy_operator.io import peering


class Original:
    """Stands in for kopf's touch: records the retry policy of each call, fails as told."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.backoffs: list[Any] = []

    async def __call__(self, *, settings: kopf.OperatorSettings, **_: Any) -> None:
        self.backoffs.append(settings.networking.error_backoffs)
        if self.failures:
            raise self.failures.pop(0)


def call(guard: peering.Guard, original: Original, **kwargs: Any) -> None:
    settings = kopf.OperatorSettings()
    asyncio.run(guard.wrap(original)(settings=settings, namespace=None, **kwargs))


def test_transient_errors_keep_kopfs_own_retries() -> None:
    original = Original(errors.APIServerError({"message": "busy"}, status=503, headers={}))
    guard = peering.Guard()
    call(guard, original, lifetime=None)
    default = kopf.OperatorSettings().networking.error_backoffs
    assert original.backoffs == [peering.FORBIDDEN_BACKOFFS, default]
    assert not guard.forbidden


def test_the_goodbye_is_tried_once_and_a_403_there_is_not_fatal() -> None:
    original = Original(errors.APIForbiddenError({"message": "forbidden"}, status=403, headers={}))
    guard = peering.Guard()
    call(guard, original, lifetime=0)
    assert original.backoffs == [()]
    assert not guard.forbidden


def test_a_lasting_403_stops_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[int] = []
    monkeypatch.setattr(peering.os, "kill", lambda pid, sig: signals.append(sig))
    original = Original(errors.APIForbiddenError({"message": "forbidden"}, status=403, headers={}))
    guard = peering.Guard()
    call(guard, original, lifetime=None)
    assert guard.forbidden and signals == [peering.signal.SIGTERM]
    call(guard, original, lifetime=0)  # stopping: no more writes to a peering it may not patch
    assert original.backoffs == [peering.FORBIDDEN_BACKOFFS]
