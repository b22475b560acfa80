"""Where the proxy's parts' own words become a caller's answer: the batcher's refusals as TEI's
error statuses and shapes."""

from __future__ import annotations

from .batcher import Expired, Full, Refused, ShuttingDown, TooManyGroups
from .errors import TIMEOUT, UNHEALTHY, ProxyError, overloaded


def refusal(refused: Refused) -> ProxyError:
    """The answer for what the batcher refused or gave up on."""
    if isinstance(refused, Full):
        return overloaded(
            f"proxy queue is full ({refused.queued} of {refused.capacity} inputs waiting); "
            "retry later"
        )
    if isinstance(refused, TooManyGroups):
        return overloaded(
            f"too many parameter groups waiting at once ({refused.limit}); retry later",
            reason="too_many_groups",
        )
    if isinstance(refused, Expired):
        return ProxyError(504, "request deadline passed while queued", TIMEOUT)
    if isinstance(refused, ShuttingDown):
        return ProxyError(503, "proxy is shutting down", UNHEALTHY)
    raise TypeError(f"no answer for {refused!r}")
