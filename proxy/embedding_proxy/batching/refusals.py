"""The batcher's refusals, in its own words (respond.py turns them into answers)."""

from __future__ import annotations


class Refused(Exception):
    """The batcher will not (or can no longer) compute an item."""


class Full(Refused):
    """Admission: a lane holds `capacity` inputs at most."""

    def __init__(
        self, queued: int, capacity: int, lane: str = "", retry_after: int = 1, asked: int = 0
    ) -> None:
        super().__init__(f"queue full: {queued} of {capacity} inputs waiting")
        self.queued, self.capacity, self.lane, self.asked = queued, capacity, lane, asked
        self.retry_after = retry_after  # seconds: about the time the lane takes to drain


class TooManyGroups(Refused):
    """Admission: a new group key while `limit` groups are busy."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} groups busy")
        self.limit = limit


class Expired(Refused):
    """The item's deadline passed while it was queued; it was never sent."""


class ShuttingDown(Refused):
    """The batcher closed while the item's batch was in flight."""
