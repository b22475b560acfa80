"""The simulated GPU: cost model, TEI's batch policy, the permit semaphore, the engine."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from embedding_proxy.simulator.gpu import CostModel, Engine, Entry, Permits, take_batch


def test_cost_is_flat_up_to_the_knee_then_grows_with_tokens() -> None:
    cost = CostModel()
    assert cost.seconds(128) == cost.seconds(64 * 128) == pytest.approx(0.006)
    assert cost.seconds(256 * 128) == pytest.approx(0.0158, abs=0.001)  # H100: 15.4 ms
    assert cost.seconds(100_000) > cost.seconds(50_000) > cost.seconds(10_000)
    assert CostModel(base_ms=200).seconds(1) == pytest.approx(0.2)


def entries(loop: asyncio.AbstractEventLoop, tokens: list[int], group_size: int = 1) -> deque:
    return deque(Entry(t, i // group_size, loop.create_future(), 0.0) for i, t in enumerate(tokens))


async def test_batches_are_taken_in_order_up_to_the_token_budget() -> None:
    queue = entries(asyncio.get_running_loop(), [100, 200, 300, 400])
    first = take_batch(queue, max_batch_tokens=600)
    assert [e.tokens for e in first] == [100, 200, 300]
    assert [e.tokens for e in take_batch(queue, max_batch_tokens=600)] == [400]
    assert take_batch(queue, max_batch_tokens=600) == []


async def test_max_batch_requests_caps_a_batch() -> None:
    queue = entries(asyncio.get_running_loop(), [10] * 5)
    assert len(take_batch(queue, max_batch_tokens=10_000, max_batch_requests=2)) == 2
    assert len(queue) == 3


async def test_inputs_whose_caller_left_are_skipped() -> None:
    queue = entries(asyncio.get_running_loop(), [10, 10, 10])
    queue[0].future.cancel()
    queue[2].future.cancel()
    batch = take_batch(queue, max_batch_tokens=100)
    assert len(batch) == 1 and not batch[0].future.done()
    assert not queue


async def test_without_internal_batching_a_batch_is_one_request() -> None:
    queue = entries(asyncio.get_running_loop(), [10] * 6, group_size=3)
    batch = take_batch(queue, max_batch_tokens=15, per_request=True)
    assert [e.group for e in batch] == [0, 0, 0]  # the whole request, past the token budget
    assert [e.group for e in take_batch(queue, max_batch_tokens=15, per_request=True)] == [1] * 3


async def test_permits_are_fair_and_try_acquire_fails_while_others_wait() -> None:
    permits = Permits(2)
    assert permits.try_acquire(2) and permits.in_use == 2
    assert not permits.try_acquire()
    waiter = asyncio.create_task(permits.acquire())
    await asyncio.sleep(0)
    permits.release()
    assert not permits.try_acquire()  # the released permit went to the waiter
    await waiter
    permits.release(2)
    assert permits.in_use == 0 and permits.try_acquire(2)


async def test_a_waiter_that_leaves_does_not_lose_a_permit() -> None:
    permits = Permits(1)
    assert permits.try_acquire()
    waiter = asyncio.create_task(permits.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    permits.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert permits.in_use == 0


async def run_engine(engine: Engine, groups: list[list[int]]) -> list[tuple[int, int]]:
    passes: list[tuple[int, int]] = []
    engine.on_forward = lambda inputs, tokens, _s: passes.append((inputs, tokens))
    engine.start()
    try:
        futures = [f for g in groups for f in engine.submit(g)]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
    finally:
        await engine.stop()
    return passes


async def test_engine_batches_inputs_that_wait_while_the_gpu_is_busy() -> None:
    engine = Engine(CostModel(base_ms=20), max_batch_tokens=16384)
    passes = await run_engine(engine, [[10]] * 20)
    assert sum(n for n, _ in passes) == 20
    assert len(passes) < 20 and max(n for n, _ in passes) > 1


async def test_engine_respects_the_token_budget() -> None:
    engine = Engine(CostModel(base_ms=1), max_batch_tokens=100)
    passes = await run_engine(engine, [[30, 30, 30, 30, 30]])
    assert all(tokens <= 100 for _, tokens in passes)
    assert sum(n for n, _ in passes) == 5


async def test_engine_without_internal_batching_runs_one_request_per_pass() -> None:
    engine = Engine(CostModel(base_ms=5), max_batch_tokens=16384, internal_batching=False)
    passes = await run_engine(engine, [[10]] * 6 + [[10, 10, 10]])
    assert sorted(n for n, _ in passes) == [1, 1, 1, 1, 1, 1, 3]


async def test_engine_never_computes_inputs_whose_caller_left() -> None:
    engine = Engine(CostModel(base_ms=50), max_batch_tokens=16384, internal_batching=False)
    passes: list[int] = []
    engine.on_forward = lambda inputs, _t, _s: passes.append(inputs)
    engine.start()
    try:
        (first,) = engine.submit([10])
        await asyncio.sleep(0.01)  # running now; what follows waits
        leavers = [f for _ in range(5) for f in engine.submit([10])]
        for f in leavers:
            f.cancel()
        forward = await first
        await asyncio.sleep(0.15)
    finally:
        await engine.stop()
    assert passes == [1]
    assert forward.batch_size == 1 and forward.inference_seconds >= 0.04
