"""The flush policy, pure: which group goes upstream next and how much of it, or when to look
again. In the style of TEI's queue (`next_batch`): no clock, no loop, no futures; the batcher
drives it. Tested by table in tests/unit/proxy/test_batch_policy.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class Caps:
    """Limits imposed by the upstream (TEI's /info); the proxy never exceeds them."""

    max_batch_size: int = 1 << 30
    max_batch_tokens: int = 1 << 30
    max_inflight_inputs: int = 1 << 30


class Waiting(Protocol):
    """What the policy reads of one group's queue."""

    @property
    def count(self) -> int: ...  # queued inputs

    @property
    def cost(self) -> int: ...  # their estimated tokens

    @property
    def oldest(self) -> float: ...  # when the longest-waiting of them was queued

    @property
    def rank(self) -> int: ...  # its highest lane with work (0: the highest lane)


G = TypeVar("G", bound=Waiting)


@dataclass(slots=True)
class Limits:
    """The settings, the upstream's caps and what is in flight now, as the policy needs them
    (the driver counts a started batch off `calls_free` and `inputs_free`)."""

    batch_inputs: int  # most inputs in one call (settings and caps together)
    batch_tokens: int  # most estimated tokens in one call (one input may exceed it alone)
    max_wait: float  # seconds an input may wait for company (deadline mode)
    adaptive: bool  # send as soon as a call slot is free, whatever the fill
    calls_free: int  # call slots free under max_concurrency
    inputs_free: int  # inputs the upstream may still take (max_inflight_inputs)
    flush_all: bool = False  # draining: send everything now


@dataclass(slots=True)
class Flush(Generic[G]):
    """Send `group` now: its oldest inputs, as many as `admits` lets in."""

    group: G
    inputs: int  # at most this many inputs
    tokens: int  # and at most this many tokens, unless one input alone is more


def next_batch(groups: Iterable[G], limits: Limits, now: float) -> Flush[G] | float | None:
    """The group to send now (among those ready, the one with work in the highest lane, and of
    those the one whose oldest input has waited longest); else the time to look again (deadline
    mode: when the oldest input's wait is up); else None: nothing waits, or only a finishing call
    can make room."""
    if limits.calls_free <= 0:
        return None
    room = min(limits.batch_inputs, limits.inputs_free)
    if room <= 0:
        return None
    eager = limits.adaptive or limits.flush_all
    best: G | None = None
    best_rank = 0
    best_at: float | None = None  # the best's oldest, once a tie asked for it
    due: float | None = None
    for group in groups:
        if not group.count:
            continue
        ready = eager or group.count >= limits.batch_inputs or group.cost >= limits.batch_tokens
        if not ready:
            oldest = group.oldest
            if oldest + limits.max_wait > now:
                if due is None or oldest + limits.max_wait < due:
                    due = oldest + limits.max_wait
                continue
        # `oldest` walks the group's callers: asked only to break a tie.
        rank = group.rank
        if best is None or rank < best_rank:
            best, best_rank, best_at = group, rank, None
        elif rank == best_rank:
            if best_at is None:
                best_at = best.oldest
            oldest = group.oldest
            if oldest < best_at:
                best, best_at = group, oldest
    if best is not None:
        return Flush(best, room, limits.batch_tokens)
    return due


def admits(flush: Flush[G], inputs: int, tokens: int, cost: int) -> bool:
    """Whether a batch of `inputs` holding `tokens` takes one more input of `cost`: within the
    input count, and within the token budget unless the batch is still empty."""
    return inputs < flush.inputs and (not inputs or tokens + cost <= flush.tokens)
