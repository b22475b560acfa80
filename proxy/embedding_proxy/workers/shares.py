"""Pod-level limits split among worker processes, pure.

With `server.workers` > 1 each worker has its own batcher, so a limit meant for the pod (upstream
calls at once, TEI's `max_concurrent_requests`, queue capacity and each lane's, memory for bodies
and answers, pooled upstream connections) is divided: worker `index` of `workers` gets
`limit // workers`, and the first `limit % workers` workers one more, so the shares add up to
the limit exactly. A share is never below 1 (a worker with no upstream slot could not serve), so
only where the limit is below the number of workers do the shares add up to more: `workers`
then, and the proxy says so at start.
"""

from __future__ import annotations

import dataclasses

from ..batching.policy import Caps
from ..config.settings import Config


def share(limit: int, index: int, workers: int) -> int:
    """Worker `index`'s part of a pod-level `limit` (0 ≤ index < workers)."""
    if workers <= 1:
        return limit
    base, extra = divmod(limit, workers)
    return max(1, base + (1 if index < extra else 0))


def worker_config(config: Config, index: int, workers: int) -> Config:
    """The config one worker runs with: the pod-level amounts replaced by its shares. Settings
    that are not whole numbers (`max_concurrency: auto`) are left to their controller, whose
    bound, `max_concurrency_limit`, is split like the rest."""
    if workers <= 1:
        return config

    def split(section: object, *names: str) -> dict[str, object]:
        return {
            n: share(v, index, workers)
            for n in names
            if isinstance(v := getattr(section, n), int) and not isinstance(v, bool)
        }

    update = split(config.batching, "max_concurrency", "max_concurrency_limit", "queue_capacity")
    if config.batching.lanes:  # each lane's capacity is the pod's too (its 429s)
        update["lanes"] = [
            lane.model_copy(update=split(lane, "queue_capacity")) for lane in config.batching.lanes
        ]
    batching = config.batching.model_copy(update=update)
    server = config.server.model_copy(
        update=split(config.server, "max_body_buffer_bytes", "max_answer_buffer_bytes")
    )
    upstream = config.upstream.model_copy(
        update=split(config.upstream, "max_connections", "max_answer_buffer_bytes")
    )
    limits = config.limits.model_copy(update=split(config.limits, "max_answers_held_bytes"))
    return config.model_copy(
        update={"batching": batching, "server": server, "upstream": upstream, "limits": limits}
    )


def worker_caps(caps: Caps, index: int, workers: int) -> Caps:
    """TEI's limits for one worker: the inputs in flight at once (`max_concurrent_requests`)
    split; the per-call limits (batch size, tokens) hold for every call as they are."""
    if workers <= 1:
        return caps
    return dataclasses.replace(
        caps, max_inflight_inputs=share(caps.max_inflight_inputs, index, workers)
    )


def oversubscribed(config: Config, workers: int) -> list[str]:
    """The pod-level limits too small to give every worker one: their total is `workers`."""
    return [
        f"batching.{name}={value}"
        for name in ("max_concurrency", "queue_capacity")
        if isinstance(value := getattr(config.batching, name), int) and value < workers
    ]
