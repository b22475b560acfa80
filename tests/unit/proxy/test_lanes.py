"""Priority lanes and fair sharing by table: which inputs one batch (or several in a row) takes
from which lanes and callers. Pure: plain objects, no event loop."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from embedding_proxy.batching.lanes import Caller, Group, LaneState, fill, realign, unqueue


@dataclass(eq=False)
class Item:
    name: str
    caller: Caller
    cost: int = 1
    enqueued: float = 0.0
    queued: bool = True


def lanes(*shares: float) -> list[LaneState]:
    return [LaneState(f"l{i}", 10_000, share) for i, share in enumerate(shares)]


def queue(
    group: Group, lane: int, who: str, n: int, weight: int = 1, cost: int = 1, at: float = 0.0
) -> list[Item]:
    """`n` inputs of caller `who` in `lane`, named who0, who1, ..."""
    caller = group.lanes[lane].caller(who, weight)
    start = caller.count + sum(1 for e in caller.entries if not e.queued)
    items = [Item(f"{who}{start + i}", caller, cost, at + i) for i in range(n)]
    group.add(caller, items, n * cost)
    return items


def batches(group: Group, room: int, count: int, budget: int = 10**9) -> list[list[str]]:
    return [[e.name for e in fill(group, room, budget, lambda e: True, 0.0)] for _ in range(count)]


# (case, lane shares, queued: (lane, caller, inputs, weight), room, batches, wanted names)
CASES = [
    (
        "one caller: oldest first, room respected",
        (0.0,),
        [(0, "a", 5, 1)],
        3,
        2,
        [["a0", "a1", "a2"], ["a3", "a4"]],
    ),
    (
        "two callers of equal weight take turns input by input",
        (0.0,),
        [(0, "a", 4, 1), (0, "b", 4, 1)],
        6,
        1,
        [["a0", "b0", "a1", "b1", "a2", "b2"]],
    ),
    (
        "weight 3 to 1: three inputs a turn against one",
        (0.0,),
        [(0, "a", 10, 3), (0, "b", 10, 1)],
        8,
        1,
        [["a0", "a1", "a2", "b0", "a3", "a4", "a5", "b1"]],
    ),
    (
        "a turn cut short by a full batch goes on in the next batch",
        (0.0,),
        [(0, "a", 10, 3), (0, "b", 10, 1)],
        2,
        2,
        [["a0", "a1"], ["a2", "b0"]],
    ),
    (
        "a caller with a 100-input request does not push out single-input callers",
        (0.0,),
        [(0, "big", 100, 1), (0, "x", 1, 1), (0, "y", 1, 1), (0, "z", 1, 1)],
        5,
        1,
        [["big0", "x0", "y0", "z0", "big1"]],
    ),
    (
        "higher lane first; the lower lane's reserve (10% of 32 = 3) and then the spare room",
        (0.0, 0.1),
        [(0, "i", 3, 1), (1, "b", 100, 1)],
        32,
        1,
        [["b0", "b1", "b2", "i0", "i1", "i2", *(f"b{n}" for n in range(3, 29))]],
    ),
    (
        "a lane with no min_share gets only spare room",
        (0.0, 0.0),
        [(0, "i", 40, 1), (1, "b", 40, 1)],
        4,
        1,
        [["i0", "i1", "i2", "i3"]],
    ),
    (
        "a 10% lane of batches of 4 gets one input every few batches (the fraction carries)",
        (0.0, 0.1),
        [(0, "i", 40, 1), (1, "b", 40, 1)],
        4,
        3,
        [["i0", "i1", "i2", "i3"], ["i4", "i5", "i6", "i7"], ["b0", "i8", "i9", "i10"]],
    ),
    (
        "three lanes: each reserve, highest first, then the rest top down",
        (0.0, 0.25, 0.25),
        [(0, "i", 10, 1), (1, "m", 10, 1), (2, "l", 10, 1)],
        8,
        1,
        [["m0", "m1", "l0", "l1", "i0", "i1", "i2", "i3"]],
    ),
]


@pytest.mark.parametrize(
    ("shares", "queued", "room", "count", "wanted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_fill(
    shares: tuple[float, ...],
    queued: list[tuple[int, str, int, int]],
    room: int,
    count: int,
    wanted: list[list[str]],
) -> None:
    group = Group("g", lanes(*shares), 0.0)
    for lane, who, n, weight in queued:
        queue(group, lane, who, n, weight)
    assert batches(group, room, count) == wanted


# (case, shares, room, batches): both lanes always full; the lower lane's share over all batches
SHARES = [
    ("10% of batches of 32", (0.0, 0.1), 32, 10),
    ("10% of batches of 1", (0.0, 0.1), 1, 50),
    ("25% of batches of 7", (0.0, 0.25), 7, 40),
]


@pytest.mark.parametrize(
    ("shares", "room", "count"), [c[1:] for c in SHARES], ids=[c[0] for c in SHARES]
)
def test_a_saturated_lower_lane_gets_its_min_share_over_time(
    shares: tuple[float, float], room: int, count: int
) -> None:
    group = Group("g", lanes(*shares), 0.0)
    queue(group, 0, "i", room * count)
    queue(group, 1, "b", room * count)
    taken = Counter(name[0] for batch in batches(group, room, count) for name in batch)
    assert taken["i"] + taken["b"] == room * count  # the batches stay full
    assert taken["b"] == int(shares[1] * room * count)  # exactly its share, not more


def test_two_equal_batch_callers_share_the_lower_lane_half_and_half() -> None:
    group = Group("g", lanes(0.0, 0.1), 0.0)
    queue(group, 0, "i", 10_000)
    queue(group, 1, "p", 5_000)
    queue(group, 1, "q", 5_000)
    taken = Counter(name[0] for batch in batches(group, 32, 100) for name in batch)
    assert taken["p"] == taken["q"] == 160  # 10% of 3,200, halved


def test_an_idle_lane_banks_no_share() -> None:
    group = Group("g", lanes(0.0, 0.1), 0.0)
    queue(group, 0, "i", 100)
    batches(group, 32, 2)  # the batch lane has nothing: no credit builds up
    queue(group, 1, "b", 100)
    (batch,) = batches(group, 32, 1)
    assert sum(n.startswith("b") for n in batch) == 3


def test_the_token_budget_ends_the_batch_but_one_input_always_goes() -> None:
    group = Group("g", lanes(0.0), 0.0)
    caller = group.lanes[0].caller("a", 1)
    items = [Item(f"a{i}", caller, cost) for i, cost in enumerate([500, 10, 10])]
    group.add(caller, items, 520)
    assert batches(group, 8, 1, budget=100) == [["a0"]]
    assert batches(group, 8, 1, budget=100) == [["a1", "a2"]]
    assert group.count == 0 and group.cost == 0


def test_inputs_not_kept_and_cancelled_ones_take_no_room() -> None:
    group = Group("g", lanes(0.0), 0.0)
    items = queue(group, 0, "a", 6)
    unqueue(items[1], 0.0)  # cancelled while queued
    batch = fill(group, 3, 10**9, lambda e: e.name != "a2", 0.0)  # a2's caller gave up
    assert [e.name for e in batch] == ["a0", "a3", "a4"]
    assert group.count == 1 and group.lanes[0].state.queued == 1


def test_counts_rank_and_oldest_follow_the_queues() -> None:
    states = lanes(0.0, 0.1)
    group = Group("g", states, 0.0)
    assert group.rank == 2  # nothing queued
    queue(group, 1, "b", 2, at=5.0)
    queue(group, 1, "c", 1, at=3.0)
    assert (group.rank, group.oldest, group.count, states[1].queued) == (1, 3.0, 3, 3)
    queue(group, 0, "i", 1, at=9.0)
    assert (group.rank, group.oldest) == (0, 3.0)
    batches(group, 10, 1)
    assert (group.count, states[0].queued, states[1].queued) == (0, 0, 0)
    assert group.lanes[1].callers == {}  # callers with nothing queued are dropped


def test_a_lane_gone_on_reload_moves_its_work_to_the_fallback_lane_in_order() -> None:
    old = lanes(0.0, 0.1)
    group = Group("g", old, 0.0)
    queue(group, 0, "i", 2)
    queue(group, 1, "b", 3)
    new = [old[0], LaneState("other", 100)]
    realign(group, new, 0, 1.0)
    assert [lane.state.name for lane in group.lanes] == ["l0", "other"]
    assert (old[0].queued, old[1].queued, group.count) == (5, 0, 5)
    assert batches(group, 10, 1) == [["i0", "b0", "i1", "b1", "b2"]]
