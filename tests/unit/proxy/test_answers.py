"""The answer budgets (batching/answers.py): one request's results, and all waiting requests'."""

from __future__ import annotations

import asyncio

import pytest

from embedding_proxy.batching.answers import AnswerBudget, OverBudget, TooLarge


def budget(per_request: int = 100, total: int = 150) -> AnswerBudget[bytes]:
    return AnswerBudget(per_request, total, len)


async def test_a_request_is_refused_once_its_results_pass_its_budget() -> None:
    answers = budget()
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    waiting = asyncio.create_task(answers.gather(futures))
    futures[0].set_result(b"x" * 60)
    await asyncio.sleep(0.01)  # the waiter wakes
    assert answers.held == 60 and not waiting.done()
    futures[1].set_result(b"x" * 60)  # 120 > 100
    with pytest.raises(TooLarge):
        await waiting
    assert answers.held == 0  # given back however it ends


async def test_all_waiting_requests_together_stay_within_the_total() -> None:
    answers = budget(per_request=100, total=150)
    loop = asyncio.get_running_loop()
    first = [loop.create_future() for _ in range(2)]
    second = [loop.create_future() for _ in range(2)]
    one = asyncio.create_task(answers.gather(first))
    two = asyncio.create_task(answers.gather(second))
    first[0].set_result(b"a" * 90)
    await asyncio.sleep(0.01)  # the waiter wakes
    second[0].set_result(b"b" * 90)  # 180 held, and it would wait for more
    with pytest.raises(OverBudget):
        await two
    first[1].set_result(b"a")  # the first one completes: the last result is never refused
    await one
    assert answers.held == 0


def test_a_forwarded_answer_is_held_within_both_bounds() -> None:
    answers = budget(per_request=100, total=150)
    answers.hold(60, 60)
    with pytest.raises(TooLarge):
        answers.hold(120, 60)
    answers.release(120)
    answers.held = 140  # others' results
    with pytest.raises(OverBudget):
        answers.hold(20, 20)
    answers.release(20)
    assert answers.held == 140
    assert answers.check(b"x" * 100) == b"x" * 100
    with pytest.raises(TooLarge):
        answers.check(b"x" * 101)


async def test_only_results_that_wait_for_the_rest_are_kept() -> None:
    """A result that waits for others of its request is made its own (`keep`); those that come
    last are rendered at once and cost no copy."""
    kept: list[bytes] = []

    def keep(result: bytes) -> int:
        kept.append(result)
        return len(result)

    answers: AnswerBudget[bytes] = AnswerBudget(100, 150, len, keep)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(3)]
    waiting = asyncio.create_task(answers.gather(futures))
    futures[0].set_result(b"first")
    await asyncio.sleep(0.01)  # the waiter wakes
    futures[1].set_result(b"second")
    futures[2].set_result(b"third")
    await waiting
    assert kept == [b"first"] and answers.held == 0
