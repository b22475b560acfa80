"""The upstream's permits (batching/permits.py): work beside the batches waits its turn, keeps
its permits from the batches meanwhile, and gives up at its deadline."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from embedding_proxy.api import inference
from embedding_proxy.batching.permits import Permits
from embedding_proxy.batching.refusals import Expired


async def test_a_waiter_is_not_starved_by_batches_and_is_served_in_turn() -> None:
    permits = Permits(lambda: 10)
    permits.held = 8  # batches in flight
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(permits.acquire(6, loop.time() + 5))
    second = asyncio.create_task(permits.acquire(1, loop.time() + 5))
    await asyncio.sleep(0)
    assert permits.free_for_batches() == 10 - 8 - 7  # no new batch takes what they wait for
    permits.give(4)  # 4 held: the first (6) fits; the second (1) not yet
    assert await first == 6
    await asyncio.sleep(0)
    assert not second.done() and (permits.held, permits.reserved) == (10, 1)
    permits.give(6)  # the first is done
    assert await second == 1
    assert (permits.held, permits.reserved) == (5, 0)


async def test_a_waiter_gives_up_at_its_deadline_and_its_share_returns() -> None:
    permits = Permits(lambda: 4)
    permits.held = 4
    loop = asyncio.get_running_loop()
    with pytest.raises(Expired):
        await permits.acquire(3, loop.time() + 0.05)
    assert (permits.reserved, permits.free_for_batches()) == (0, 0)
    permits.give(4)
    assert permits.held == 0


async def test_more_than_the_limit_waits_for_all_of_it() -> None:
    permits = Permits(lambda: 4)
    assert await permits.acquire(9, asyncio.get_running_loop().time() + 1) == 4


@pytest.mark.parametrize(
    ("path", "body", "taken"),
    [
        ("/rerank", {"query": "q", "texts": ["a", "b", "c"]}, 3),
        ("/similarity", {"inputs": {"source_sentence": "s", "sentences": ["a", "b"]}}, 3),
        ("/embed", {"inputs": "a"}, 1),
        ("/embed", {"inputs": [1, 2, 3]}, 1),  # one list of token ids
        ("/embed", {"inputs": [[1, 2], "b"]}, 2),
        ("/", {"query": "q", "texts": ["a"]}, 1),
        ("/vertex", {"instances": [{"inputs": ["a", "b"]}, {"query": "q", "texts": ["t"]}]}, 3),
        ("/tokenize", {"inputs": ["a", "b"]}, 0),  # TEI takes no permit for these
        ("/decode", {"ids": [1, 2]}, 0),
        ("/rerank", None, 0),  # TEI refuses it before taking any
    ],
)
def test_forwarded_requests_take_the_permits_tei_takes(path: str, body: object, taken: int) -> None:
    raw = orjson.dumps(body) if body is not None else b"{not json"
    assert inference.permits(path, raw) == taken
