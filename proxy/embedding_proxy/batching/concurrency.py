"""How many upstream calls a batcher may run at once: the setting's number, or what the auto
controller (concurrency_limit.py, pure) finds from the calls it sees. The batcher reads `limit()`
and sends its calls through `watch(dispatch)`, which times each one for the controller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..config.settings import BatchingConfig
from .concurrency_limit import ConcurrencyLimit
from .policy import Caps

log = logging.getLogger(__name__)

Dispatch = Callable[[Any, list[Any], float], Awaitable[Sequence[Any]]]


class Concurrency:
    """The limit of one batcher; `config` gives its settings and the upstream's caps now (the
    bound is theirs: max_concurrency_limit and TEI's permits, or this batcher's share)."""

    def __init__(self, config: Callable[[], tuple[BatchingConfig, Caps]]) -> None:
        self._config = config
        self.auto: ConcurrencyLimit | None = None  # while max_concurrency is auto
        self._calls = 0

    def bound(self) -> int:
        settings, caps = self._config()
        return min(settings.max_concurrency_limit, caps.max_inflight_inputs)

    def limit(self) -> int:
        """Upstream calls that may run at once now."""
        fixed = self._config()[0].max_concurrency
        if fixed != "auto":
            self.auto = None
            return fixed
        bound = self.bound()
        if self.auto is None:
            # From loop time 0: no call has run under it yet, so none is left out.
            self.auto = ConcurrencyLimit(bound, 0.0)
        elif bound != self.auto.bound:
            self.auto.rebound(bound, asyncio.get_running_loop().time())
        return self.auto.limit

    def watch(self, dispatch: Dispatch) -> Dispatch:
        """`dispatch`, each call timed and counted for auto: a call that raises has failed."""

        async def watched(key: Any, items: list[Any], deadline: float) -> Sequence[Any]:
            loop = asyncio.get_running_loop()
            self._calls += 1
            inflight, started, ok = self._calls, loop.time(), False
            try:
                results = await dispatch(key, items, deadline)
                ok = True
                return results
            finally:
                self._calls -= 1
                if self.auto is not None:
                    self._sample(started, loop.time(), len(items), inflight, ok)

        return watched

    def _sample(self, started: float, now: float, inputs: int, inflight: int, ok: bool) -> None:
        auto = self.auto
        assert auto is not None
        before = auto.limit
        if auto.sample(started, now, inputs, inflight, ok, self.bound()) != before:
            log.debug("upstream concurrency limit %d -> %d", before, auto.limit)
