"""A pure model of a batching proxy in front of an upstream, in simulated time: closed-loop
callers, the proxy's queue (adaptive flush: a free call slot takes what is queued, up to a full
batch), and one of two upstreams, a GPU that runs one batch at a time (TEI with its internal
batching off) or one that merges every call waiting into its next pass (TEI's internal batching),
with a cost per pass that is flat up to a knee and grows past it. The controller under test sets
the number of calls in flight; the model says how many inputs per second each limit gives."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Upstream:
    """Pass cost: `base` seconds up to `knee` inputs, `per_input` seconds each beyond.
    `merge`: one pass takes every call waiting (internal batching); else one call a pass.
    `overhead`: seconds a call spends outside the upstream (network, proxy), in parallel."""

    base: float = 0.006
    knee: int = 512
    per_input: float = 0.0
    merge: bool = True
    overhead: float = 0.001

    def cost(self, inputs: int) -> float:
        return self.base + max(0, inputs - self.knee) * self.per_input


@dataclass
class Model:
    upstream: Upstream
    callers: int = 256
    batch: int = 32
    noise: float = 0.05  # each pass's cost varies by up to this share
    seed: int = 1
    now: float = 0.0
    queued: int = 0  # inputs waiting in the proxy
    inflight: int = 0  # calls in flight
    done_inputs: int = 0
    _events: list[tuple[float, int, str, tuple]] = field(default_factory=list)
    _waiting: list[tuple[float, int]] = field(default_factory=list)  # calls at the upstream
    _busy: bool = False
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.queued = self.callers

    def _push(self, at: float, kind: str, data: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, data))

    def run(self, until: float, limit: Callable[[], int], sample: Callable[..., None]) -> None:
        """Advance to `until`, starting calls up to `limit()` and reporting each finished call
        as sample(started, finished, inputs, inflight, ok)."""
        self._start_calls(limit)
        while self._events and self._events[0][0] <= until:
            at, _, kind, data = heapq.heappop(self._events)
            self.now = at
            if kind == "arrive":  # a call reaches the upstream
                self._waiting.append(data)
                self._next_pass()
            elif kind == "pass":  # a pass ends: its calls head back
                self._busy = False
                for started, inputs, inflight in data:
                    self._push(at + self.upstream.overhead / 2, "back", (started, inputs, inflight))
                self._next_pass()
            else:  # "back": the call is answered
                started, inputs, inflight = data
                self.inflight -= 1
                self.queued += inputs  # the callers send again at once
                self.done_inputs += inputs
                sample(started, at, inputs, inflight, True)
                self._start_calls(limit)
        self.now = until

    def _start_calls(self, limit: Callable[[], int]) -> None:
        while self.queued and self.inflight < limit():
            inputs = min(self.batch, self.queued)
            self.queued -= inputs
            self.inflight += 1
            call = (self.now, inputs, self.inflight)
            self._push(self.now + self.upstream.overhead / 2, "arrive", call)

    def _next_pass(self) -> None:
        if self._busy or not self._waiting:
            return
        if self.upstream.merge:
            calls, self._waiting = self._waiting, []
        else:
            calls = [self._waiting.pop(0)]
        inputs = sum(c[1] for c in calls)
        cost = self.upstream.cost(inputs) * (1 + self.noise * self.rng.uniform(-1, 1))
        self._busy = True
        self._push(self.now + cost, "pass", tuple(calls))


def throughput(upstream: Upstream, limit: int, seconds: float = 5.0, **kw: object) -> float:
    """Inputs per second at a fixed limit, after a second of warm-up."""
    model = Model(upstream, **kw)  # type: ignore[arg-type]
    model.run(1.0, lambda: limit, lambda *a: None)
    before = model.done_inputs
    model.run(1.0 + seconds, lambda: limit, lambda *a: None)
    return (model.done_inputs - before) / seconds
