"""When to retry an upstream call, and how long to wait before it."""

from __future__ import annotations

import random


class RetryBudget:
    """Retries may add at most `ratio` calls per recent first attempt, plus a small reserve, so
    retries cannot multiply an outage. Each first attempt deposits `ratio`; each retry spends 1;
    the balance is capped so a quiet period cannot bank an unbounded burst of retries."""

    def __init__(self, ratio: float, reserve: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = reserve + 100 * ratio
        self.balance = reserve

    def record_attempt(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def try_spend(self) -> bool:
        if self.balance < 1:
            return False
        self.balance -= 1
        return True


def backoff_seconds(
    attempt: int, base_ms: int, max_ms: int, rng: random.Random | None = None
) -> float:
    """Exponential backoff with equal jitter for retry number `attempt` (1 for the first retry)."""
    ceiling = min(max_ms, base_ms * 2 ** (attempt - 1)) / 1000
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def retry_after_seconds(header: str | None) -> float | None:
    """The delay a Retry-After header asks for, in its seconds form (TEI's); else None."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None
