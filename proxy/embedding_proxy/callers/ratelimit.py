"""Token-bucket rate limits per client (its API key, or its address when auth is off)."""

from __future__ import annotations

import math

from ..api.errors import ProxyError, overloaded


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst_setting = burst
        self.burst = float(burst or max(1, math.ceil(rate)))
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, updated at)
        self.enabled = rate > 0

    def take(self, client: str, now: float) -> None:
        """Spend one token for `client`, or raise 429 with the wait until the next one."""
        tokens, updated = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            wait = math.ceil((1 - tokens) / self.rate)
            raise _limited(wait)
        self._buckets[client] = (tokens - 1, now)

    def forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a new bucket would not."""
        full_after = self.burst / self.rate if self.rate else 0
        for client in [c for c, (_, at) in self._buckets.items() if now - at > full_after]:
            del self._buckets[client]


def _limited(wait_s: int) -> ProxyError:
    return overloaded(
        f"rate limit exceeded; retry in {wait_s} s", retry_after_s=wait_s, reason="rate_limited"
    )
