"""The flush policy by table: which group is sent, how much of it, or when to look again."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from embedding_proxy.batching.policy import Flush, Limits, admits, next_batch


@dataclass
class Queue:
    name: str
    count: int
    cost: int
    oldest: float
    rank: int = 0  # its highest lane with work


def limits(**kw: object) -> Limits:
    base: dict[str, object] = dict(
        batch_inputs=8,
        batch_tokens=100,
        max_wait=0.010,
        adaptive=False,
        calls_free=1,
        inputs_free=1000,
    )
    return Limits(**{**base, **kw})  # type: ignore[arg-type]


NOW = 100.0
A_YOUNG = Queue("a", count=2, cost=4, oldest=NOW - 0.002)
A_DUE = Queue("a", count=2, cost=4, oldest=NOW - 0.010)
B_YOUNGER = Queue("b", count=3, cost=6, oldest=NOW - 0.001)
B_FULL = Queue("b", count=8, cost=16, oldest=NOW - 0.001)
B_HEAVY = Queue("b", count=1, cost=100, oldest=NOW - 0.001)
EMPTY = Queue("e", count=0, cost=0, oldest=NOW - 5)
# Only batch-lane work (rank 1), waiting long.
C_LOW_OLD = Queue("c", count=2, cost=4, oldest=NOW - 1.0, rank=1)

# (case, groups, limits, wanted): a group's name with (inputs, tokens) to send; a time to look
# again; or None.
CASES = [
    ("nothing queued", [], limits(), None),
    ("an empty group is never sent", [EMPTY], limits(adaptive=True), None),
    ("deadline: wait for the oldest's wait to end", [A_YOUNG, B_YOUNGER], limits(), NOW + 0.008),
    ("deadline: due now", [A_DUE, B_YOUNGER], limits(), ("a", 8, 100)),
    ("deadline: full by count goes at once", [A_YOUNG, B_FULL], limits(), ("b", 8, 100)),
    ("deadline: full by tokens goes at once", [A_YOUNG, B_HEAVY], limits(), ("b", 8, 100)),
    ("adaptive: oldest group first", [B_YOUNGER, A_YOUNG], limits(adaptive=True), ("a", 8, 100)),
    ("draining sends what is not due", [B_YOUNGER], limits(flush_all=True), ("b", 8, 100)),
    ("no call slot free", [A_DUE], limits(calls_free=0), None),
    ("upstream's in-flight cap reached", [A_DUE], limits(inputs_free=0), None),
    ("upstream's in-flight cap bounds the batch", [A_DUE], limits(inputs_free=3), ("a", 3, 100)),
    ("no wake-up in adaptive mode", [], limits(adaptive=True), None),
    ("a higher lane's group first", [C_LOW_OLD, A_YOUNG], limits(adaptive=True), ("a", 8, 100)),
    ("a lower lane's group when only it is ready", [C_LOW_OLD, A_YOUNG], limits(), ("c", 8, 100)),
]


@pytest.mark.parametrize(
    ("groups", "lim", "wanted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_next_batch(groups: list[Queue], lim: Limits, wanted: object) -> None:
    decision = next_batch(groups, lim, NOW)
    if isinstance(decision, Flush):
        decision = (decision.group.name, decision.inputs, decision.tokens)
    assert decision == (pytest.approx(wanted) if isinstance(wanted, float) else wanted)


# (case, inputs, tokens, cost, room, budget, wanted)
ADMITS = [
    ("the first input always goes, however costly", 0, 0, 500, 8, 100, True),
    ("within both limits", 3, 40, 10, 8, 100, True),
    ("exactly at the token budget", 3, 90, 10, 8, 100, True),
    ("over the token budget", 3, 95, 10, 8, 100, False),
    ("no room left", 8, 10, 1, 8, 100, False),
]


@pytest.mark.parametrize(
    ("inputs", "tokens", "cost", "room", "budget", "wanted"),
    [c[1:] for c in ADMITS],
    ids=[c[0] for c in ADMITS],
)
def test_admits(inputs: int, tokens: int, cost: int, room: int, budget: int, wanted: bool) -> None:
    assert admits(Flush(A_DUE, room, budget), inputs, tokens, cost) is wanted
