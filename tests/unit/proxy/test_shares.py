"""Pod-level limits split among worker processes."""

from __future__ import annotations

import pytest

from embedding_proxy.batching.policy import Caps
from embedding_proxy.config.settings import validate
from embedding_proxy.workers.shares import oversubscribed, share, worker_caps, worker_config


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 16, 64, 100, 512, 4096])
def test_shares_add_up_to_the_limit_and_none_is_zero(limit: int, workers: int) -> None:
    shares = [share(limit, i, workers) for i in range(workers)]
    assert min(shares) >= 1
    assert max(shares) - min(shares) <= 1  # as even as whole numbers go
    assert sum(shares) == max(limit, workers)  # exactly the limit, unless it is below 1 each


def test_a_worker_runs_with_its_share_of_the_pods_limits() -> None:
    config = validate(
        {
            "server": {"workers": 3},
            "batching": {"max_concurrency": 8, "queue_capacity": 100, "max_batch_size": 64},
            "upstream": {"max_connections": 10},
        }
    )
    ones = [worker_config(config, i, 3) for i in range(3)]
    assert [c.batching.max_concurrency for c in ones] == [3, 3, 2]
    assert [c.batching.queue_capacity for c in ones] == [34, 33, 33]
    assert [c.upstream.max_connections for c in ones] == [4, 3, 3]
    # Limits per upstream call hold for every call as they are.
    assert {c.batching.max_batch_size for c in ones} == {64}
    assert worker_config(config, 0, 1) is config


def test_teis_concurrent_inputs_are_split_and_its_batch_limits_kept() -> None:
    caps = Caps(max_batch_size=32, max_batch_tokens=16384, max_inflight_inputs=512)
    parts = [worker_caps(caps, i, 3) for i in range(3)]
    assert sum(p.max_inflight_inputs for p in parts) == 512
    assert {(p.max_batch_size, p.max_batch_tokens) for p in parts} == {(32, 16384)}


def test_limits_below_one_a_worker_are_named() -> None:
    config = validate({"batching": {"max_concurrency": 2}})
    assert oversubscribed(config, 4) == ["batching.max_concurrency=2"]
    assert oversubscribed(config, 2) == []


def test_each_lanes_capacity_is_split_too() -> None:
    config = validate({"batching": {"lanes": "interactive:100,batch:7:0.1"}})
    ones = [worker_config(config, i, 2) for i in range(2)]
    lanes = [[(lane.name, lane.queue_capacity) for lane in c.batching.lanes or []] for c in ones]
    assert lanes == [[("interactive", 50), ("batch", 4)], [("interactive", 50), ("batch", 3)]]
    assert {c.batching.lanes[1].min_share for c in ones} == {0.1}  # type: ignore[index]


def test_auto_concurrency_keeps_auto_and_its_bound_is_split() -> None:
    config = validate({"batching": {"max_concurrency": "auto", "max_concurrency_limit": 9}})
    ones = [worker_config(config, i, 2) for i in range(2)]
    assert {c.batching.max_concurrency for c in ones} == {"auto"}
    assert [c.batching.max_concurrency_limit for c in ones] == [5, 4]
