"""What the answers of requests still waiting for some of their inputs may hold.

A request's inputs are spread over batches, and each batch's results wait, held, until the
request's last input is answered. TEI's `/embed_all` answers a vector per token, so one request
of 1,024 inputs could make the proxy hold gigabytes (docs/security.md). Two bounds: one request's
results (`per_request`, else `TooLarge`), and all waiting requests' together (`total`, else
`OverBudget` for a request that would wait on holding more). Generic: results are sized, and
made their own while they wait (`keep`), by functions the caller gives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .refusals import Refused

R = TypeVar("R")


class TooLarge(Refused):
    """One request's results passed `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"results over {limit} bytes")
        self.limit = limit


class OverBudget(Refused):
    """The results held for all waiting requests passed `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"results held over {limit} bytes")
        self.limit = limit


class AnswerBudget(Generic[R]):
    def __init__(
        self,
        per_request: int,
        total: int,
        size: Callable[[R], int],
        keep: Callable[[R], int] | None = None,
    ) -> None:
        self.per_request = per_request
        self.total = total
        self.size = size
        # A result that waits for the rest of its request: made its own (not a view into its
        # batch's answer, which it would keep alive whole), its size returned.
        self.keep = keep or size
        self.held = 0  # bytes of results held for requests still waiting

    def hold(self, size: int, grown: int) -> None:
        """An answer that is not made of results (a forwarded one) grew by `grown` to `size`
        bytes: held until `release(size)`, within both bounds."""
        self.held += grown
        if size > self.per_request:
            raise TooLarge(self.per_request)
        if self.held > self.total:
            raise OverBudget(self.total)

    def release(self, size: int) -> None:
        self.held -= size

    def check(self, result: R) -> R:
        """A request of one input: its one result within `per_request`."""
        if self.size(result) > self.per_request:
            raise TooLarge(self.per_request)
        return result

    async def gather(self, futures: Sequence[asyncio.Future[R]]) -> None:
        """Wait until every future is done or one has failed; raise `TooLarge` or
        `OverBudget` as soon as a bound is passed. Wakes once a batch, not once an input."""
        held = 0
        pending: set[asyncio.Future[R]] | Sequence[asyncio.Future[R]] = futures
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                grown = 0
                measure = self.keep if pending else self.size  # the last are rendered at once
                for future in done:
                    if future.cancelled() or future.exception() is not None:
                        return
                    grown += measure(future.result())
                held += grown
                self.held += grown
                if held > self.per_request:
                    raise TooLarge(self.per_request)
                if pending and self.held > self.total:
                    raise OverBudget(self.total)
        finally:
            # The caller renders the results at once, without awaiting: they are as good as gone.
            self.held -= held
