"""The batcher with a recording dispatch function in place of the upstream."""

from __future__ import annotations

import asyncio

import pytest

from embedding_proxy.api.errors import ProxyError
from embedding_proxy.batching.batcher import Batcher
from embedding_proxy.batching.policy import Caps
from embedding_proxy.batching.refusals import Expired, Full, TooManyGroups
from embedding_proxy.config.settings import BatchingConfig
from embedding_proxy.respond import refusal


class Recorder:
    """Dispatch that records each batch and answers item -> item.upper() after `delay`."""

    def __init__(self, delay: float = 0.0, fail: set[str] | None = None) -> None:
        self.batches: list[tuple[object, list[str]]] = []
        self.delay = delay
        self.fail = fail or set()
        self.running = 0
        self.max_running = 0

    async def __call__(self, key: object, items: list[str], deadline: float) -> list[object]:
        self.batches.append((key, list(items)))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        return [
            ProxyError(422, f"bad {i}", "Validation") if i in self.fail else i.upper()
            for i in items
        ]


def settings(**kw: object) -> BatchingConfig:
    return BatchingConfig(**kw)  # type: ignore[arg-type]


def far() -> float:
    return asyncio.get_running_loop().time() + 30


async def results(entries) -> list[object]:
    return [await e.future for e in entries]


async def test_each_caller_gets_its_own_results_in_order() -> None:
    rec = Recorder(delay=0.01)
    b: Batcher = Batcher(rec, settings(max_batch_size=8, max_concurrency=1))
    calls = [b.submit("k", [f"a{i}", f"b{i}"], [1, 1], far()) for i in range(20)]
    answers = await asyncio.gather(*(results(c) for c in calls))
    assert answers == [[f"A{i}", f"B{i}"] for i in range(20)]
    assert all(len(items) <= 8 for _, items in rec.batches)
    # With one slot busy, later callers are coalesced into full batches.
    assert max(len(items) for _, items in rec.batches) == 8


async def test_groups_are_never_mixed() -> None:
    rec = Recorder(delay=0.005)
    b: Batcher = Batcher(rec, settings(max_batch_size=16, max_concurrency=2))
    calls = [b.submit(("g", i % 3), [f"x{i}"], [1], far()) for i in range(60)]
    await asyncio.gather(*(results(c) for c in calls))
    for key, items in rec.batches:
        assert {int(item[1:]) % 3 for item in items} == {key[1]}


async def test_concurrency_and_upstream_caps_are_respected() -> None:
    rec = Recorder(delay=0.01)
    caps = Caps(max_batch_size=5, max_inflight_inputs=12)
    b: Batcher = Batcher(rec, settings(max_batch_size=64, max_concurrency=3), caps)
    calls = [b.submit("k", [str(i)], [1], far()) for i in range(100)]
    await asyncio.gather(*(results(c) for c in calls))
    assert max(len(items) for _, items in rec.batches) == 5
    assert rec.max_running <= 3


async def test_token_budget_splits_batches() -> None:
    rec = Recorder()
    b: Batcher = Batcher(rec, settings(max_batch_size=100, max_batch_tokens=10, max_concurrency=1))
    calls = [b.submit("k", [str(i)], [4], far()) for i in range(9)]
    await asyncio.gather(*(results(c) for c in calls))
    assert all(len(items) <= 2 for _, items in rec.batches)


async def test_adaptive_lone_caller_is_sent_at_once() -> None:
    rec = Recorder()
    b: Batcher = Batcher(rec, settings(max_wait_ms=5000, flush_mode="adaptive"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await results(b.submit("k", ["solo"], [1], far())) == ["SOLO"]
    assert loop.time() - started < 1.0  # far below max_wait_ms


async def test_deadline_mode_waits_for_the_batch_to_fill() -> None:
    rec = Recorder()
    b: Batcher = Batcher(rec, settings(max_wait_ms=50, max_batch_size=4, flush_mode="deadline"))
    first = b.submit("k", ["a"], [1], far())
    await asyncio.sleep(0.01)
    assert rec.batches == []  # still waiting for company
    rest = [b.submit("k", [x], [1], far()) for x in "bcd"]
    await asyncio.gather(results(first), *(results(r) for r in rest))
    assert rec.batches == [("k", ["a", "b", "c", "d"])]  # sent when full, not after the wait


async def test_deadline_mode_flushes_after_max_wait() -> None:
    rec = Recorder()
    b: Batcher = Batcher(rec, settings(max_wait_ms=20, max_batch_size=4, flush_mode="deadline"))
    assert await results(b.submit("k", ["a", "b"], [1, 1], far())) == ["A", "B"]
    assert rec.batches == [("k", ["a", "b"])]


async def test_full_queue_is_refused_with_429() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(queue_capacity=4, max_concurrency=1, max_batch_size=1))
    b.submit("k", ["a", "b", "c", "d"], [1] * 4, far())
    with pytest.raises(Full) as info:
        b.submit("k", ["e"], [1], far())
    assert refusal(info.value).status == 429
    assert refusal(info.value).headers["Retry-After"]


async def test_a_request_larger_than_its_lanes_queue_is_413_not_a_429_to_retry() -> None:
    rec = Recorder()
    b: Batcher = Batcher(rec, settings(queue_capacity=4))
    with pytest.raises(Full) as info:
        b.submit("k", list("abcde"), [1] * 5, far())  # the queue is empty: no wait would help
    answer = refusal(info.value)
    assert answer.status == 413 and "Retry-After" not in answer.headers
    assert "5 inputs exceed the queue" in answer.message and answer.reason == "too_large"
    assert await results(b.submit("k", list("abcd"), [1] * 4, far())) == list("ABCD")


async def test_cancelled_inputs_are_never_dispatched() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(max_concurrency=1, max_batch_size=1))
    first = b.submit("k", ["first"], [1], far())
    gone = b.submit("k", ["gone"], [1], far())
    await asyncio.sleep(0.01)  # "first" is in flight, "gone" queued
    b.cancel(gone)
    assert b.queue_depth == 0
    await results(first)
    await asyncio.sleep(0.01)
    assert [items for _, items in rec.batches] == [["first"]]


async def test_expired_inputs_fail_without_being_sent() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(max_concurrency=1, max_batch_size=1))
    loop = asyncio.get_running_loop()
    first = b.submit("k", ["first"], [1], far())
    late = b.submit("k", ["late"], [1], loop.time() + 0.01)
    with pytest.raises(Expired) as info:
        await late[0].future
    assert refusal(info.value).status == 504
    await results(first)
    assert [items for _, items in rec.batches] == [["first"]]


async def test_per_item_errors_reach_only_their_caller() -> None:
    rec = Recorder(fail={"bad"})
    b: Batcher = Batcher(rec, settings())
    good = b.submit("k", ["good"], [1], far())
    bad = b.submit("k", ["bad"], [1], far())
    assert await results(good) == ["GOOD"]
    with pytest.raises(ProxyError):
        await bad[0].future


async def test_dispatch_failure_fails_that_batch_only() -> None:
    calls = 0

    async def flaky(key: object, items: list[str], deadline: float) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ProxyError(502, "upstream gone", "Upstream")
        return items

    b: Batcher = Batcher(flaky, settings(max_batch_size=1, max_concurrency=1))
    first = b.submit("k", ["a"], [1], far())
    second = b.submit("k", ["b"], [1], far())
    with pytest.raises(ProxyError):
        await first[0].future
    assert await second[0].future == "b"


async def test_drain_sends_everything_and_waits() -> None:
    rec = Recorder(delay=0.01)
    b: Batcher = Batcher(rec, settings(max_wait_ms=10_000, flush_mode="deadline"))
    entries = b.submit("k", ["a", "b"], [1, 1], far())
    assert await b.drain(5)
    assert [e.future.result() for e in entries] == ["A", "B"]
    assert b.queue_depth == 0 and b.inflight_inputs == 0


async def test_live_figures_and_idle_groups() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(max_concurrency=1, max_batch_size=2, idle_group_seconds=0.1))
    b.submit("k", ["a", "b", "c"], [1, 1, 1], far())
    await asyncio.sleep(0.01)
    assert (b.inflight_inputs, b.queue_depth, b.inflight_calls) == (2, 1, 1)
    assert await b.drain(5)
    await asyncio.sleep(0.15)
    b.drop_idle_groups()
    assert b.group_count == 0


async def test_groups_are_bounded_idle_ones_make_room_busy_ones_do_not() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(max_concurrency=1, max_groups=2))
    first = b.submit("k1", ["a", "b"], [1, 1], far())  # nothing has left yet: both busy
    second = b.submit("k2", ["c"], [1], far())
    with pytest.raises(TooManyGroups) as refused:
        b.submit("k3", ["d"], [1], far())
    answer = refusal(refused.value)
    assert answer.status == 429 and answer.reason == "too_many_groups"
    assert b.queue_depth == 3  # the refused request left nothing behind
    await results(first)
    await results(second)
    assert await b.drain(5)
    for i in range(10):  # every new key finds room: the idle groups go at once
        assert await results(b.submit(f"n{i}", ["e"], [1], far())) == ["E"]
        assert b.group_count <= 2


async def test_settings_update_applies_to_next_batches() -> None:
    rec = Recorder(delay=0.01)
    b: Batcher = Batcher(rec, settings(max_batch_size=2, max_concurrency=1))
    b.update(settings=settings(max_batch_size=10, max_concurrency=1))
    calls = [b.submit("k", [str(i)], [1], far()) for i in range(21)]
    await asyncio.gather(*(results(c) for c in calls))
    assert max(len(items) for _, items in rec.batches) == 10


LANES = [
    {"name": "interactive", "queue_capacity": 4},
    {"name": "batch", "queue_capacity": 8, "min_share": 0.25},
]


async def test_a_full_lane_never_refuses_another_lanes_request() -> None:
    rec = Recorder(delay=0.05)
    full: list[str] = []
    b: Batcher = Batcher(
        rec, settings(lanes=LANES, max_concurrency=1, max_batch_size=4), on_full=full.append
    )
    b.submit("k", [f"b{i}" for i in range(8)], [1] * 8, far(), "batch", "indexer")
    with pytest.raises(Full) as info:
        b.submit("k", ["b8"], [1], far(), "batch", "indexer")
    answer = refusal(info.value)
    assert answer.status == 429 and "lane 'batch'" in answer.message
    assert full == ["batch"]
    assert await results(b.submit("k", ["i0"], [1], far(), "interactive", "user")) == ["I0"]
    assert await b.drain(5)


async def test_a_batch_is_filled_from_the_highest_lane_with_the_lower_lanes_share() -> None:
    rec = Recorder(delay=0.05)
    b: Batcher = Batcher(rec, settings(lanes=LANES, max_concurrency=1, max_batch_size=4))
    blocker = b.submit("k", ["x"], [1], far())  # holds the only slot while the rest queues
    await asyncio.sleep(0)
    low = b.submit("k", [f"b{i}" for i in range(8)], [1] * 8, far(), "batch", "indexer")
    high = b.submit("k", [f"i{i}" for i in range(4)], [1] * 4, far(), None, "user")
    await asyncio.gather(results(blocker), results(low), results(high))
    # 25% of 4 is one batch-lane input per batch while the interactive lane has work.
    assert [items for _, items in rec.batches] == [
        ["x"],
        ["b0", "i0", "i1", "i2"],
        ["b1", "i3", "b2", "b3"],
        ["b4", "b5", "b6", "b7"],
    ]


async def test_lane_figures_the_signal_lanes_and_a_reload_that_drops_a_lane() -> None:
    rec = Recorder(delay=0.05)
    sent: list[tuple[int, set[str]]] = []
    b: Batcher = Batcher(
        rec,
        settings(lanes=LANES, signal_lanes=["interactive"], max_concurrency=1, max_batch_size=2),
        on_batch=lambda batch, now: sent.append((len(batch), {e.lane.name for e in batch})),
    )
    b.submit("k", ["x"], [1], far())
    await asyncio.sleep(0)
    low = b.submit("k", ["b0", "b1", "b2"], [1] * 3, far(), "batch", "indexer")
    assert [(x.name, x.queued, x.inflight) for x in b.lanes] == [
        ("interactive", 0, 1),
        ("batch", 3, 0),
    ]
    assert b.signal_depth == 1  # the batch lane does not count
    b.update(settings=settings(lanes=LANES[:1], max_concurrency=1, max_batch_size=2))
    assert [(x.name, x.queued) for x in b.lanes] == [("interactive", 3)]
    assert b.signal_depth == 4  # no signal lanes named: all of them
    assert await results(low) == ["B0", "B1", "B2"]
    assert sent == [(1, {"interactive"}), (2, {"interactive"}), (1, {"interactive"})]
    assert b.lanes[0].inflight == 0 and b.queue_depth == 0
