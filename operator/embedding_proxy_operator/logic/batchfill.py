"""Batch fill from a proxy's `/metrics` page: inputs per upstream call divided by the most one
call may hold (`embedding_proxy_batch_size` histogram's sum and count, and
`embedding_proxy_batch_size_limit`), measured between two scrapes of the same pod."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

BATCH_SIZE = "embedding_proxy_batch_size"
BATCH_SIZE_LIMIT = "embedding_proxy_batch_size_limit"


@dataclass(frozen=True)
class BatchCounts:
    inputs: float  # embedding_proxy_batch_size_sum: inputs sent upstream since the proxy started
    calls: float  # embedding_proxy_batch_size_count: upstream calls since then
    limit: float  # embedding_proxy_batch_size_limit now

    def fill_since(self, before: BatchCounts | None) -> float | None:
        """Mean fill of the calls made since `before` (since start when there is none, or when
        the counters went back: the proxy restarted). None when no call was made."""
        inputs, calls = self.inputs, self.calls
        if before is not None and before.calls <= calls and before.inputs <= inputs:
            inputs, calls = inputs - before.inputs, calls - before.calls
        if calls <= 0 or self.limit <= 0:
            return None
        return min(1.0, inputs / calls / self.limit)


def parse(text: str) -> BatchCounts | None:
    """The counts on one page; None when any is missing or not a usable number."""
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name not in (BATCH_SIZE, BATCH_SIZE_LIMIT):
                continue
            for sample in family.samples:
                if sample.labels.keys() - {"le"}:
                    continue
                found[sample.name] = sample.value
    except (ValueError, TypeError, IndexError):
        return None
    try:
        counts = BatchCounts(
            found[BATCH_SIZE + "_sum"], found[BATCH_SIZE + "_count"], found[BATCH_SIZE_LIMIT]
        )
    except KeyError:
        return None
    if not all(math.isfinite(v) and v >= 0 for v in (counts.inputs, counts.calls, counts.limit)):
        return None
    return counts
