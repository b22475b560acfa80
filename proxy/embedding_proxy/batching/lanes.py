"""Priority lanes and fair sharing inside one parameter group, pure: the queues (group -> lane ->
caller -> FIFO of inputs) and how one batch is filled from them. No clock, no loop, no futures:
the batcher drives it. Tested by table in tests/unit/proxy/test_lanes.py.

Filling a batch of `room` inputs:
1. every lane with work earns `min_share * room` of credit; the whole part of its credit is its
   reserve for this batch (the fraction carries over, so a 10% lane gets 10% over time even of
   batches of 4). Reserves are taken first, highest lane first;
2. the rest of the room goes to the highest lane with work, then the next, and so on: the GPU stays
   as full as the queues allow and no lane waits for another's timer.
Within a lane, callers take turns by deficit round robin over inputs: each turn a caller may send
`weight` inputs; one caller's 1,000-input requests cannot push out another's single ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol


class LaneState:
    """One configured lane, across all groups: its settings and live counts."""

    __slots__ = (
        "capacity",
        "inflight",
        "min_share",
        "name",
        "queued",
        "rate",
        "sent",
        "sent_seen",
        "weight",
    )

    def __init__(self, name: str, capacity: int, min_share: float = 0.0, weight: int = 1) -> None:
        self.name = name
        self.capacity = capacity  # inputs queued at most (admission)
        self.min_share = min_share
        self.weight = weight  # of a caller whose key names none
        self.queued = 0  # inputs waiting, all groups
        self.inflight = 0  # inputs in upstream calls
        self.sent = 0  # inputs ever sent (its throughput, for Retry-After)
        self.sent_seen = 0
        self.rate = 0.0  # inputs/s lately


class Queued(Protocol):
    """What the lanes read and write of one queued input (the batcher's Entry)."""

    cost: int  # estimated tokens
    enqueued: float
    queued: bool  # False once taken or cancelled (it may still sit in its caller's deque)
    caller: Caller


class Caller:
    """One caller's inputs in one lane of one group, oldest first."""

    __slots__ = ("active", "count", "deficit", "entries", "key", "lane", "weight")

    def __init__(self, key: Hashable, lane: Lane, weight: int) -> None:
        self.key = key
        self.lane = lane
        self.weight = weight
        self.entries: deque[Any] = deque()
        self.count = 0  # queued entries (the deque may also hold cancelled ones)
        self.deficit = 0  # inputs it may still send in its current turn
        self.active = True  # in the lane's ring (and its `callers`)

    def head(self) -> Any:
        """Its oldest queued entry (only asked while `count` > 0)."""
        entries = self.entries
        while not entries[0].queued:
            entries.popleft()  # cancelled ones
        return entries[0]


class Lane:
    """One lane's queue inside one group: its callers in round-robin order."""

    __slots__ = ("callers", "count", "credit", "group", "ring", "state")

    def __init__(self, state: LaneState, group: Group) -> None:
        self.state = state
        self.group = group
        self.callers: dict[Hashable, Caller] = {}
        self.ring: deque[Caller] = deque()  # the head caller is the one whose turn it is
        self.count = 0
        self.credit = 0.0  # inputs owed to it by min_share, carried between batches

    def caller(self, key: Hashable, weight: int) -> Caller:
        caller = self.callers.get(key)
        if caller is None:
            caller = self.callers[key] = Caller(key, self, weight)
            self.ring.append(caller)
        caller.weight = weight
        return caller

    def _drop(self, caller: Caller) -> None:
        """The head caller has nothing queued: out of the ring, its turn forgotten."""
        self.ring.popleft()
        del self.callers[caller.key]
        caller.active = False
        caller.deficit = 0


class Group:
    """The queue of one group key: one Lane per configured lane, highest first."""

    __slots__ = ("cost", "count", "idle_since", "key", "lanes")

    def __init__(self, key: Hashable, states: Sequence[LaneState], now: float) -> None:
        self.key = key
        self.lanes = [Lane(s, self) for s in states]
        self.count = 0
        self.cost = 0
        self.idle_since = now

    def add(self, caller: Caller, entries: Sequence[Queued], cost: int) -> None:
        """Queue `entries` (made for `caller`, from `lanes[i].caller(...)`)."""
        n = len(entries)
        if not caller.active:  # dropped since it was looked up: back into the ring
            caller.active = True
            caller.lane.callers[caller.key] = caller
            caller.lane.ring.append(caller)
        caller.entries.extend(entries)
        caller.count += n
        lane = caller.lane
        lane.count += n
        lane.state.queued += n
        self.count += n
        self.cost += cost

    @property
    def rank(self) -> int:
        """The position of its highest lane with work (0: the first lane)."""
        for i, lane in enumerate(self.lanes):
            if lane.count:
                return i
        return len(self.lanes)

    @property
    def oldest(self) -> float:
        """When its longest-waiting queued input was queued (only asked while `count` > 0)."""
        best = float("inf")
        for lane in self.lanes:
            if lane.count:
                for caller in lane.ring:
                    if caller.count:
                        best = min(best, caller.head().enqueued)
        return best


def unqueue(entry: Queued, now: float) -> None:
    """`entry` leaves its queue (taken for a batch, or cancelled)."""
    entry.queued = False
    caller = entry.caller
    caller.count -= 1
    lane = caller.lane
    lane.count -= 1
    lane.state.queued -= 1
    group = lane.group
    group.count -= 1
    group.cost -= entry.cost
    if not group.count:
        group.idle_since = now


class _Fill:
    """One batch being filled."""

    __slots__ = ("batch", "budget", "full", "keep", "now", "tokens")

    def __init__(self, budget: int, keep: Callable[[Any], bool], now: float) -> None:
        self.batch: list[Any] = []
        self.budget = budget
        self.tokens = 0
        self.full = False  # the token budget is spent
        self.keep = keep
        self.now = now


def fill(
    group: Group, room: int, budget: int, keep: Callable[[Any], bool], now: float
) -> list[Any]:
    """Take at most `room` inputs and `budget` tokens (one input alone may exceed it) from
    `group`, as the module's docstring says. `keep(entry)` says whether a taken entry still goes
    (False: its caller gave up; it uses no room)."""
    work = _Fill(budget, keep, now)
    lanes = group.lanes
    reserves = []
    for lane in lanes:
        share = lane.state.min_share
        if lane.count and share:
            # Capped, so that a lane that could not take its reserve does not bank a burst.
            lane.credit = min(lane.credit + share * room, share * room + 1)
        else:
            lane.credit = 0.0
        reserves.append(int(lane.credit + 1e-9))  # ten times 0.1 adds up to 0.99999
    for lane, reserve in zip(lanes, reserves, strict=True):
        if reserve and not work.full:
            _take(lane, min(reserve, room - len(work.batch)), work)
    for lane in lanes:
        left = room - len(work.batch)
        if work.full or left <= 0:
            break
        if lane.count:
            _take(lane, left, work)
    return work.batch


def _take(lane: Lane, want: int, work: _Fill) -> None:
    """Up to `want` inputs from `lane`, callers in turn (deficit round robin over inputs)."""
    ring = lane.ring
    batch = work.batch
    got = 0
    while got < want and ring:
        caller = ring[0]
        if not caller.count:
            lane._drop(caller)
            continue
        if caller.deficit < 1:
            caller.deficit += caller.weight
        entries = caller.entries
        while caller.deficit >= 1 and caller.count and got < want:
            entry = entries[0]
            if not entry.queued:
                entries.popleft()  # cancelled
                continue
            if batch and work.tokens + entry.cost > work.budget:
                work.full = True
                break
            entries.popleft()
            unqueue(entry, work.now)
            caller.deficit -= 1
            if work.keep(entry):
                batch.append(entry)
                work.tokens += entry.cost
                got += 1
        if work.full:
            break
        if not caller.count:
            lane._drop(caller)
        elif caller.deficit < 1:
            ring.rotate(-1)  # its turn is over
        # else: the batch is full mid-turn; it goes on from here in the next one.
    lane.credit = max(0.0, lane.credit - got)


def realign(group: Group, states: Sequence[LaneState], fallback: int, now: float) -> None:
    """New lanes (a reload): keep each lane's queue by name; what waited in a lane that is gone
    moves to `states[fallback]`, in its order, callers and weights kept."""
    old = {lane.state.name: lane for lane in group.lanes}
    lanes = []
    for state in states:
        lane = old.pop(state.name, None) or Lane(state, group)
        lane.state = state
        lanes.append(lane)
    group.lanes = lanes
    for gone in old.values():
        for caller in list(gone.ring):
            moved = [e for e in caller.entries if e.queued]
            for entry in moved:
                unqueue(entry, now)
            if moved:
                target = lanes[fallback].caller(caller.key, caller.weight)
                for entry in moved:
                    entry.queued = True
                    entry.caller = target
                group.add(target, moved, sum(e.cost for e in moved))
