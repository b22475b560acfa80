"""The upstream's permits: one per input in flight, `limit` at most (TEI's
`max_concurrent_requests`, which TEI 1.9 takes with `try_acquire`, answering 429 at once when one
is missing: router/src/http/server.rs). Batches take theirs as they start (the flush policy sees
`free_for_batches`); other work waits for its own in `acquire`, first come first served, and
while it waits its permits are kept from the batches, so a large request is not starved by a
stream of small batches."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .refusals import Expired


class Permits:
    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.held = 0
        self.reserved = 0  # asked for by waiters, not yet granted
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def free_for_batches(self) -> int:
        return self.limit() - self.held - self.reserved

    def give(self, permits: int) -> None:
        self.held -= permits
        while self._waiters:
            wanted, future = self._waiters[0]
            if future.done():  # given up
                self._waiters.popleft()
                continue
            if self.held + wanted > self.limit():
                break
            self._waiters.popleft()
            self.reserved -= wanted
            self.held += wanted
            future.set_result(None)

    async def acquire(self, permits: int, deadline: float) -> int:
        """Take `permits` (never more than the limit), waiting until the deadline at most."""
        wanted = min(permits, self.limit())
        if not self._waiters and self.held + wanted <= self.limit():
            self.held += wanted
            return wanted
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        self.reserved += wanted
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(future)
        except TimeoutError:
            self._give_up(future, wanted)
            raise Expired() from None
        except BaseException:
            self._give_up(future, wanted)
            raise
        return wanted

    def _give_up(self, future: asyncio.Future[None], wanted: int) -> None:
        if future.done():  # granted as its waiter gave up: given back
            self.give(wanted)
        else:
            future.cancel()
            self.reserved -= wanted
