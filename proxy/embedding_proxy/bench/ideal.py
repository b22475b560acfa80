"""`ideal`: the best the upstream does with pre-formed batches, found rather than assumed.

One fixed shape (full batches of `max_client_batch_size`, the proxy's calls at once) is not the
upstream's best: an upstream that batches internally can do more with smaller batches and more
calls in flight, and the proxy, which finds its own calls in flight, then beat that `ideal`
(proxy/ideal above 1). So `ideal` is the best of a small grid of batch sizes and calls in flight,
each measured in the same run; the fixed shape is one point of it and is reported beside it.
Pure: the runs are the caller's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Around the fixed shape (batch B, C calls): batches of B, B/2, B/4, at C, 2C and 4C calls.
BATCH_SHARES = (1, 2, 4)
CALL_FACTORS = (1, 2, 4)


def grid(batch: int, calls: int) -> list[tuple[int, int]]:
    """The shapes measured, (batch size, calls in flight): the fixed one first."""
    points = [
        (max(1, batch // share), calls * factor)
        for share in BATCH_SHARES
        for factor in CALL_FACTORS
    ]
    return list(dict.fromkeys(points))  # in order, without repeats (batches of 1 or 2)


def best(batch: int, calls: int, run: Callable[[int, int], dict[str, Any]]) -> dict[str, Any]:
    """`run(batch, calls)` at every point of the grid; the fastest point's result, with the
    grid (`ideal_grid`) and the fixed shape's figures (`fixed`) in it."""
    results = [(point, run(*point)) for point in grid(batch, calls)]
    (top_batch, top_calls), top = max(results, key=lambda pr: pr[1]["inputs_per_s"])
    fixed = results[0][1]
    out = dict(top)
    out["ideal_batch_size"], out["ideal_concurrency"] = top_batch, top_calls
    out["ideal_grid"] = [
        {
            "batch_size": point[0],
            "concurrency": point[1],
            "inputs_per_s": result["inputs_per_s"],
            "failed": result["failed"],
        }
        for point, result in results
    ]
    out["fixed"] = {
        "batch_size": batch,
        "concurrency": calls,
        "inputs_per_s": fixed["inputs_per_s"],
        "p50_ms": fixed["p50_ms"],
    }
    out["grid_failed"] = sum(r["failed"] for _, r in results)
    return out
