"""The concurrency controller behind `max_concurrency: auto`: its rules by table, then against
modelled upstreams (upstream_model.py, simulated time): it must settle near the best fixed limit
of each, at the knee where latency would only climb, and find it again after the upstream
changes."""

from __future__ import annotations

import asyncio
import functools

import pytest
from upstream_model import Model, Upstream, throughput

from embedding_proxy.batching.batcher import Batcher
from embedding_proxy.batching.concurrency_limit import (
    DECREASE,
    MIN_WINDOW_S,
    WINDOW_ROUNDS,
    ConcurrencyLimit,
)
from embedding_proxy.batching.policy import Caps
from embedding_proxy.config.settings import BatchingConfig


def window(
    c: ConcurrencyLimit,
    at: float,
    latency: float,
    inputs: int = 32,
    inflight: int | None = None,
    ok: bool = True,
    bound: int = 32,
) -> float:
    """Feed one complete window of calls at the current limit, `limit` calls overlapping at a
    time, each taking `latency`; returns the time after it."""
    limit = c.limit
    rounds = max(WINDOW_ROUNDS, int(MIN_WINDOW_S / latency) + 1)
    for _ in range(rounds + 1):
        for _ in range(limit):
            c.sample(at, at + latency, inputs, inflight or limit, ok, bound)
        at += latency
    return at


def test_starts_within_its_bound() -> None:
    assert ConcurrencyLimit(32, 0.0).limit == 4
    assert ConcurrencyLimit(2, 0.0).limit == 2
    assert ConcurrencyLimit(0, 0.0).limit == 1


def test_keeps_a_step_up_that_adds_throughput_and_goes_on_faster() -> None:
    c = ConcurrencyLimit(32, 0.0)
    at = window(c, 0.0, 0.010)  # held at 4, then probes 6
    assert (c.held, c.limit) == (4, 6)
    at = window(c, at, 0.010)  # same latency with more calls: more inputs/s, kept
    assert c.held == 6
    assert c.limit == 6 + 2 * 3  # the next step, twice as long


def test_undoes_a_step_up_that_only_adds_latency() -> None:
    c = ConcurrencyLimit(32, 0.0)
    at = window(c, 0.0, 0.010)
    assert c.limit == 6
    window(c, at, 0.015)  # 1.5x the calls, 1.5x the latency: no more inputs/s
    assert (c.held, c.limit) == (4, 4)


def test_a_step_down_that_keeps_throughput_at_less_latency_is_kept() -> None:
    c = ConcurrencyLimit(32, 0.0)
    at = window(c, 0.0, 0.010)
    at = window(c, at, 0.015)  # up refused: back to 4, down next
    at = window(c, at, 0.010)
    at = window(c, at, 0.010)  # held two windows, then probes 4 - 1
    assert c.limit == 3
    window(c, at, 0.0075)  # 3/4 of the calls, 3/4 of the latency: same inputs/s
    assert c.held == 3


def test_slots_nobody_used_are_not_kept() -> None:
    c = ConcurrencyLimit(32, 0.0)
    at = window(c, 0.0, 0.010)
    assert c.limit == 6
    window(c, at, 0.005, inflight=4)  # faster, but no call found a fifth one in flight
    assert c.limit == 4


def test_the_limit_falls_to_what_the_load_uses() -> None:
    c = ConcurrencyLimit(32, 0.0, initial=16)
    window(c, 0.0, 0.010, inflight=3)
    assert c.held == 3


def test_calls_started_before_a_change_are_not_counted() -> None:
    c = ConcurrencyLimit(32, 0.0)
    at = window(c, 0.0, 0.010)
    assert c.limit == 6
    for _ in range(1000):  # started under the old limit, however slow
        c.sample(at - 0.5, at, 1, 4, True, 32)
    assert (c.held, c.limit) == (4, 6)


def test_failed_calls_cut_the_limit() -> None:
    c = ConcurrencyLimit(32, 0.0, initial=16)
    window(c, 0.0, 0.010, ok=False)
    assert c.limit == int(16 * DECREASE)


def test_a_lower_bound_applies_at_once() -> None:
    c = ConcurrencyLimit(32, 0.0, initial=16)
    c.sample(0.0, 0.01, 32, 16, True, bound=5)
    assert c.limit == 5
    c.rebound(2, 0.02)
    assert c.limit == 2
    at = 0.02
    for _ in range(20):
        at = window(c, at, 0.010, bound=2)
        assert c.limit <= 2


# Against modelled upstreams: TEI with internal batching on (6 ms and 50 ms a pass), off (one
# batch at a time), and with a cost that grows past a knee of 128 inputs.
UPSTREAMS = {
    "batching": Upstream(),
    "batching-50ms": Upstream(base=0.050),
    "one-at-a-time": Upstream(merge=False),
    "knee": Upstream(knee=128, per_input=0.00005),
}
NOISE = 0.1  # each pass's cost varies by up to 10%


@functools.cache
def best(name: str) -> tuple[float, frozenset[int]]:
    """The best fixed limit's inputs/s, and the limits within 5% of it (for an upstream that
    runs one batch at a time, only those up to 2x its knee: more adds latency alone)."""
    up = UPSTREAMS[name]
    rates = {n: throughput(up, n, seconds=3, noise=NOISE) for n in range(1, 17)}
    top = max(rates.values())
    good = {n for n, r in rates.items() if r >= 0.95 * top and (up.merge or n <= 4)}
    return top, frozenset(good)


def run(model: Model, c: ConcurrencyLimit, until: float) -> list[int]:
    """Advance the model to `until`; the held limit every 0.1 s."""
    held = []
    t = model.now
    while t < until:
        t = min(until, t + 0.1)
        model.run(t, lambda: c.limit, lambda *s: c.sample(*s, bound=32))
        held.append(c.held)
    return held


@pytest.mark.parametrize("name", UPSTREAMS)
def test_settles_within_five_percent_of_the_best_fixed_limit(name: str) -> None:
    top, good = best(name)
    model = Model(UPSTREAMS[name], noise=NOISE)
    c = ConcurrencyLimit(32, 0.0)
    run(model, c, 10.0)
    done = model.done_inputs
    held = run(model, c, 30.0)
    assert (model.done_inputs - done) / 20.0 >= 0.95 * top
    assert sum(h in good for h in held) >= 0.9 * len(held), sorted(set(held))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("one-at-a-time", "batching"),
        ("batching", "one-at-a-time"),
        ("batching", "batching-50ms"),
        ("batching-50ms", "one-at-a-time"),
        ("knee", "batching-50ms"),
    ],
)
def test_settles_again_within_ten_seconds_of_a_change(before: str, after: str) -> None:
    model = Model(UPSTREAMS[before], noise=NOISE)
    c = ConcurrencyLimit(32, 0.0)
    run(model, c, 20.0)
    model.upstream = UPSTREAMS[after]
    run(model, c, 30.0)
    _, good = best(after)
    held = run(model, c, 45.0)
    assert sum(h in good for h in held) >= 0.9 * len(held), sorted(set(held))


async def test_the_batcher_reads_auto_or_the_number_and_keeps_within_its_bounds() -> None:
    async def upper(key: object, items: list[str], deadline: float) -> list[str]:
        await asyncio.sleep(0)
        return [i.upper() for i in items]

    b: Batcher = Batcher(upper, BatchingConfig(), Caps(max_inflight_inputs=3))
    assert b.concurrency.limit() == 3  # auto starts at 4, TEI's permits say 3
    b.update(settings=BatchingConfig(max_concurrency_limit=2))
    assert b.concurrency.limit() == 2
    deadline = asyncio.get_running_loop().time() + 30
    entries = [b.submit("k", [f"t{i}"], [1], deadline)[0] for i in range(500)]
    assert [await e.future for e in entries] == [f"T{i}" for i in range(500)]
    assert 1 <= b.concurrency.limit() <= 2
    b.update(settings=BatchingConfig(max_concurrency=7))
    assert b.concurrency.limit() == 7
