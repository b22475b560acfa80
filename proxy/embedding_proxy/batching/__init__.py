"""Batching, generic and free of I/O: queues per group and lane, the flush policy, the concurrency
limit. Knows nothing of HTTP or TEI."""
