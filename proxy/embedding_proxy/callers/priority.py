"""Which lane a request goes to and who its caller is: the `X-Priority` header, the client's API
key (which may carry a lane and a weight) and the settings' default lane. See README, "Priority
lanes"."""

from __future__ import annotations

from typing import NamedTuple

from ..api.errors import UNAUTHORIZED, VALIDATION, ProxyError
from ..config.settings import BatchingConfig

HEADER = "x-priority"


class Key(NamedTuple):
    """A client key that was presented and is valid, with what it carries."""

    key: str
    lane: str | None = None  # the highest lane it may use, and its lane by default
    weight: int | None = None  # its weight among the callers of a lane


# A request's lane, caller (its key, or its address without auth) and weight, in the order of
# Batcher.submit's last arguments. A plain tuple: one is made per request.
Who = tuple[str, str, int | None]


class Priorities:
    def __init__(self, settings: BatchingConfig) -> None:
        lanes = settings.lane_list
        self.rank = {lane.name: i for i, lane in enumerate(lanes)}
        self.lowest = lanes[-1].name
        self.default = settings.lane_default

    def who(self, asked: str | None, key: Key | None, remote: str | None) -> Who:
        """`asked`: the X-Priority header. A key's lane is the highest its caller may use: the
        header may ask for a lower one, not a higher one."""
        if key is None:
            lane = self.default if asked is None else self.lane(asked, None)
            return lane, remote or "unknown", None
        return self.lane(asked, key.lane), key.key, key.weight

    def lane(self, asked: str | None, allowed: str | None) -> str:
        if allowed is not None and allowed not in self.rank:
            allowed = self.lowest  # a key file naming a lane the config no longer has
        if asked is None:
            return allowed or self.default
        asked = asked.strip()
        rank = self.rank.get(asked)
        if rank is None:
            raise ProxyError(
                400,
                f"X-Priority: unknown lane {asked[:40]!r}; the lanes are {', '.join(self.rank)}",
                VALIDATION,
            )
        if allowed is not None and rank < self.rank[allowed]:
            raise ProxyError(
                403,
                f"X-Priority: this API key may use lane {allowed!r} and lower ones, not {asked!r}",
                UNAUTHORIZED,
            )
        return asked
