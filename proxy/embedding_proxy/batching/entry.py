"""One queued item of the batcher: its caller's queue, its cost, its future, and when it was
queued and sent."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from .lanes import Caller, LaneState

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


class Entry(Generic[I, R]):
    """One queued item; `future` gets its result."""

    __slots__ = (
        "caller",
        "cost",
        "deadline",
        "enqueued",
        "future",
        "item",
        "lane",
        "queued",
        "started",
    )

    def __init__(
        self,
        caller: Caller,
        item: I,
        cost: int,
        future: asyncio.Future[R],
        now: float,
        deadline: float,
    ) -> None:
        self.caller = caller  # its queue: caller, in a lane, in a group
        self.item = item
        self.cost = cost
        self.future = future
        self.enqueued = now
        self.started = 0.0  # when its batch left for the upstream
        self.lane: LaneState | None = None  # the lane it was sent from
        self.deadline = deadline
        self.queued = True
