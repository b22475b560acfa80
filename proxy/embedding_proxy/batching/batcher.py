"""Coalesces items from many callers into batches: one queue per group, and in it one per lane
and caller (lanes.py decides which of them fill each batch).

Generic: it knows nothing of HTTP or TEI. A caller submits items under a group key and gets one
future per item; a dispatch function turns a batch of items into results in the same order.
It owns the queues, the flush policy's driver (the policy itself: policy.py), the concurrency
limit, admission, deadlines, cancellation, and the live figures metrics and the autoscaler read.
It says no in its own words (`Refused`); respond.py turns them into answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from ..config.settings import BatchingConfig
from .concurrency import Concurrency
from .entry import Entry
from .lanes import Group, LaneState, fill, realign, unqueue
from .permits import Permits
from .policy import Caps, Flush, Limits, next_batch
from .refusals import Expired, Full, ShuttingDown, TooManyGroups

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

log = logging.getLogger(__name__)

# dispatch(key, items, deadline) -> one result (or exception) per item, in order.
Dispatch = Callable[[K, list[I], float], Awaitable[Sequence[Any]]]


class Batcher(Generic[K, I, R]):
    def __init__(
        self,
        dispatch: Dispatch[K, I],
        settings: BatchingConfig,
        caps: Caps | None = None,
        on_batch: Callable[[list[Any], float], None] | None = None,
        answers: tuple[type[Exception], ...] = (),
        on_full: Callable[[str], None] | None = None,
        takes_permits: Callable[[K], bool] = lambda key: True,
    ) -> None:
        self.concurrency = Concurrency(lambda: (self.settings, self.caps))  # calls at once
        self._dispatch = self.concurrency.watch(dispatch)
        # Exceptions a dispatch raises as an answer (passed on quietly), not as a fault (logged).
        self._answers = answers
        self.settings = settings
        self.caps = caps or Caps()
        self._on_batch = on_batch  # (the entries sent, when) for metrics
        self._on_full = on_full  # (lane) refused for metrics
        self._groups: dict[K, Group] = {}
        self._lanes: list[LaneState] = []
        self._lane_at: dict[str, int] = {}
        self._default = 0
        self._signal: list[LaneState] = []
        self._inflight_inputs = 0
        # The upstream's permits (max_inflight_inputs): a group's batches take one per input
        # when `takes_permits(key)`; work sent beside the batches waits for its own (hold).
        self.permits = Permits(lambda: self.caps.max_inflight_inputs)
        self._takes_permits = takes_permits
        self._calls = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._flush_all = False
        self._idle = asyncio.Event()  # nothing queued, no call running: what `drain` waits for
        self._idle.set()
        self._quiet = True  # whether `_idle` is set, read without a call on the hot path
        self._set_lanes(settings)

    # Live figures.
    @property
    def queue_depth(self) -> int:
        queued = 0
        for lane in self._lanes:
            queued += lane.queued
        return queued

    @property
    def lanes(self) -> list[LaneState]:
        return self._lanes

    @property
    def signal_depth(self) -> int:
        """Queued and in-flight inputs of `signal_lanes` (all lanes when none are named)."""
        if not self._signal:
            return self.queue_depth + self._inflight_inputs
        return sum(lane.queued + lane.inflight for lane in self._signal)

    def measure_rates(self, elapsed: float) -> None:
        """Each lane's recent throughput (call every `elapsed` seconds), for Retry-After."""
        for lane in self._lanes:
            rate = (lane.sent - lane.sent_seen) / elapsed
            lane.sent_seen = lane.sent
            lane.rate = rate if not lane.rate else (lane.rate + rate) / 2

    @property
    def inflight_inputs(self) -> int:
        return self._inflight_inputs

    @property
    def inflight_calls(self) -> int:
        return self._calls

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def submit(
        self,
        key: K,
        items: Sequence[I],
        costs: Sequence[int],
        deadline: float,
        lane: str | None = None,
        caller: Hashable = None,
        weight: int | None = None,
    ) -> list[Entry[I, R]]:
        """Queue items in `lane` (default_lane if None) for `caller`, who takes turns with
        `weight` (the lane's if None); one entry (with its future) per item. Full or
        TooManyGroups: none is queued."""
        index = self._default if lane is None else self._lane_at.get(lane, self._default)
        state = self._lanes[index]
        if state.queued + len(items) > state.capacity:
            self._refuse(state, len(items))
        loop = asyncio.get_running_loop()
        now = loop.time()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = self._new_group(key, now)
        queue = group.lanes[index].caller(caller, weight or state.weight)
        if len(items) == 1:  # the hot path: one input
            entries = [Entry(queue, items[0], costs[0], loop.create_future(), now, deadline)]
        else:
            entries = [
                Entry(queue, item, cost, loop.create_future(), now, deadline)
                for item, cost in zip(items, costs, strict=True)
            ]
        group.add(queue, entries, sum(costs))
        if self._quiet:
            self._quiet = False
            self._idle.clear()
        if not self._pump_scheduled:  # _schedule, written out: this runs for every request
            self._pump_scheduled = True
            loop.call_soon(self._pump)
        return entries

    def _refuse(self, state: LaneState, asked: int) -> None:
        if self._on_full is not None:
            self._on_full(state.name)
        # About the time the lane's queue takes to go, at its recent pace (1 to 60 s).
        wait = state.queued / state.rate if state.rate > 0 else 1
        raise Full(
            state.queued, state.capacity, state.name, min(60, max(1, math.ceil(wait))), asked
        )

    def cancel(self, entries: Sequence[Entry[I, R]]) -> None:
        """The caller has gone: drop its queued items so they are never sent upstream."""
        now = asyncio.get_running_loop().time()
        unqueued = False
        for entry in entries:
            if entry.queued:
                unqueue(entry, now)
                unqueued = True
            if not entry.future.done():
                entry.future.cancel()
        if unqueued:  # else the queue is as it was: idle or not, it still is
            self._check_idle()

    def update(self, settings: BatchingConfig | None = None, caps: Caps | None = None) -> None:
        """New settings or upstream limits apply from the next batch on."""
        if settings is not None:
            self.settings = settings
            self._set_lanes(settings)
        if caps is not None:
            self.caps = caps
        self._schedule()

    async def drain(self, timeout: float) -> bool:
        """Send everything queued at once and wait for all calls to finish. True if done in time."""
        self._flush_all = True
        self._schedule()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _set_lanes(self, settings: BatchingConfig) -> None:
        """The lanes of `settings`: a lane kept by name keeps its counts; groups follow."""
        old = {lane.name: lane for lane in self._lanes}
        lanes = []
        for conf in settings.lane_list:
            lane = old.get(conf.name) or LaneState(conf.name, conf.queue_capacity)
            lane.capacity, lane.min_share = conf.queue_capacity, conf.min_share
            lane.weight = conf.weight
            lanes.append(lane)
        changed = [lane.name for lane in lanes] != [lane.name for lane in self._lanes]
        self._lanes = lanes
        self._lane_at = {lane.name: i for i, lane in enumerate(lanes)}
        self._default = self._lane_at[settings.lane_default]
        self._signal = [lanes[self._lane_at[name]] for name in settings.signal_lanes]
        if changed and self._groups:
            now = asyncio.get_running_loop().time()
            for group in self._groups.values():
                realign(group, lanes, self._default, now)

    def drop_idle_groups(self, ttl: float | None = None) -> None:
        now = asyncio.get_running_loop().time()
        ttl = self.settings.idle_group_seconds if ttl is None else ttl
        for key in [
            k for k, g in self._groups.items() if not g.count and now - g.idle_since >= ttl
        ]:
            del self._groups[key]

    def _new_group(self, key: K, now: float) -> Group:
        """A group for a new key, within `max_groups`: idle groups make room, busy ones do not
        (each group's key is held, so distinct parameter sets must not grow without bound)."""
        limit = self.settings.max_groups
        if len(self._groups) >= limit:
            self.drop_idle_groups(ttl=0)
            if len(self._groups) >= limit:
                raise TooManyGroups(limit)
        return Group(key, self._lanes, now)

    # The driver of the flush policy (policy.next_batch).
    def _schedule(self) -> None:
        # Pump on the next loop turn, so callers arriving in the same turn share a batch.
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    @property
    def batch_size_limit(self) -> int:
        """Most inputs one upstream call may hold now (what batch fill is measured against)."""
        return min(self.settings.max_batch_size, self.caps.max_batch_size)

    def limits(self) -> Limits:
        s, c = self.settings, self.caps
        return Limits(
            batch_inputs=min(s.max_batch_size, c.max_batch_size),
            batch_tokens=min(s.max_batch_tokens, c.max_batch_tokens),
            max_wait=s.max_wait_ms / 1000,
            adaptive=s.flush_mode == "adaptive",
            calls_free=self.concurrency.limit() - self._calls,
            # Permits.free_for_batches, written out: this runs for every batch.
            inputs_free=c.max_inflight_inputs - self.permits.held - self.permits.reserved,
            flush_all=self._flush_all,
        )

    def _pump(self) -> None:
        self._pump_scheduled = False
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits = self.limits()
        while True:
            decision = next_batch(self._groups.values(), limits, now)
            if not isinstance(decision, Flush):
                break
            batch = self._take(decision, now)
            if batch:
                self._start(decision.group.key, batch, now)
                limits.calls_free -= 1
                limits.inputs_free -= len(batch)
        if decision is not None:
            self._arm_timer(loop, now, decision)
        self._check_idle()

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, now: float, due: float) -> None:
        """Wake up when the oldest waiting input has waited max_wait_ms (deadline mode)."""
        if self._timer is not None and self._timer_at <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = loop.call_at(max(due, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _take(self, flush: Flush[Group], now: float) -> list[Entry[I, R]]:
        def keep(entry: Entry[I, R]) -> bool:
            if entry.future.done():
                return False
            if entry.deadline <= now:
                # Its caller has given up (or is about to): never compute it.
                entry.future.set_exception(Expired())
                return False
            return True

        return fill(flush.group, flush.inputs, flush.tokens, keep, now)

    def _start(self, key: K, batch: list[Entry[I, R]], now: float) -> None:
        self._calls += 1
        self._inflight_inputs += len(batch)
        permits = len(batch) if self._takes_permits(key) else 0
        self.permits.held += permits
        for entry in batch:
            entry.started = now
            lane = entry.lane = entry.caller.lane.state
            lane.inflight += 1
            lane.sent += 1
        if self._on_batch is not None:
            self._on_batch(batch, now)
        task = asyncio.get_running_loop().create_task(self._run(key, batch, permits))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, batch: list[Entry[I, R]], permits: int) -> None:
        deadline = max(e.deadline for e in batch)
        try:
            results = await self._dispatch(key, [e.item for e in batch], deadline)
            if len(results) != len(batch):
                raise RuntimeError(f"dispatch gave {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(ShuttingDown())
            raise
        except Exception as exc:
            if not isinstance(exc, self._answers):
                log.exception("batch for %s failed", key)
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)
        finally:
            self._calls -= 1
            self._inflight_inputs -= len(batch)
            for entry in batch:
                entry.lane.inflight -= 1  # type: ignore[union-attr]
            self.release(permits)

    async def hold(self, inputs: int, deadline: float) -> int:
        """Wait for the permits of `inputs` sent upstream beside the batches (batches leave them
        to it meanwhile); the number taken, to `release`. Expired at the deadline."""
        try:
            return await self.permits.acquire(inputs, deadline)
        except BaseException:
            self._schedule()  # what it had asked for is the batches' again
            raise

    def release(self, permits: int) -> None:
        self.permits.give(permits)
        self._schedule()

    def _check_idle(self) -> None:
        if not self._quiet and not self._calls and not self.queue_depth:
            self._quiet = True
            self._idle.set()
