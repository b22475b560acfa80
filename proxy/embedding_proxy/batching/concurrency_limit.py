"""The self-tuning upstream concurrency behind `batching.max_concurrency: auto`, pure: no loop,
no clock, no I/O. The batcher (through concurrency.py) feeds it one sample per finished upstream
call (times passed in) and reads `limit`. Tested by table and against modelled upstreams in
tests/unit/proxy/test_concurrency_limit.py.

What it looks for: the number of calls in flight that gives the most inputs per second without
letting the upstream's latency climb past the knee. Netflix's gradient2 and Envoy's adaptive
concurrency steer by latency alone (limit x baseline/current RTT, plus headroom), which assumes
throughput grows with every call let in until the latency rises. A batching proxy breaks that in
both directions: an upstream that batches internally (TEI) answers in the same time whatever the
concurrency, so latency never says stop, while more calls than callers can fill only split the
same inputs into smaller batches; and an upstream that runs one batch at a time gains from a
second call in flight (the next batch is ready when the first is done) although its latency
doubles. So this controller measures what it is after, inputs per second of finished batches,
together with the mean call latency, and climbs a score

    score = ln(inputs/s) - LATENCY_WEIGHT x ln(mean call latency)

by probing: it holds the limit for a few measuring windows, tries one step up or down (the
direction alternating), and keeps the step only if the score rose by more than a noise margin;
consecutive kept steps in one direction grow (2x, 4x, ...), as in TCP's slow start, so a large
change is crossed in a few windows. With the latency weight below 1 a step that adds throughput
is worth some latency (one batch running, the next waiting), and a step that adds latency but no
throughput (past the knee) is undone. A window lasts some rounds of calls (`WINDOW_ROUNDS` x
the limit calls, and at least `MIN_WINDOW_S`), so a slow upstream gets longer windows; calls
started before the last change are not counted, as they ran under the old limit. Probing backs
off (up to `MAX_HOLD_WINDOWS` windows between probes) while steps are refused, and starts again
at once when a window's throughput or latency moves away from what the held limit gave (a
change in load or upstream speed). Failed calls count as overload: a window where many failed
cuts the limit by a quarter (the AIMD decrease).

The limit is always within [1, bound]; the bound is an input of every sample (the configured
`max_concurrency_limit`, TEI's permits, and whatever share of them this batcher is given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LATENCY_WEIGHT = 0.125  # the price of latency: 8% more latency must buy 1% more inputs/s
MARGIN = 0.025  # a step is kept when it raises the score by more than this (about 2.5%)
WINDOW_ROUNDS = 16  # a window holds at least this many rounds of calls (limit x rounds calls) ...
MIN_WINDOW_CALLS = 8  # ... and at least this many calls ...
MIN_WINDOW_S = 0.2  # ... over at least this long
MAX_WINDOW_S = 1.0  # a window with at least MIN_WINDOW_CALLS ends after this long anyway
HOLD_WINDOWS = 2  # windows at the held limit before the next probe ...
MAX_HOLD_WINDOWS = 4  # ... doubling while probes are refused, up to this
SHIFT = 0.15  # a held window this far (log units) from the held score: conditions changed
FAILED_SHARE = 0.25  # a window with this share of failed calls: overload
DECREASE = 0.75  # the limit after overload, as a share of what it was


@dataclass(slots=True)
class Window:
    """What the calls counted in one measuring window add up to."""

    opened: float  # the limit changed (or the last window ended) at this time
    calls: int = 0
    failed: int = 0
    inputs: int = 0
    latency: float = 0.0  # summed over the calls
    busy: float = 0.0  # time with at least one counted call in flight
    busy_until: float = 0.0
    first_start: float = math.inf
    peak_inflight: int = 0

    def add(self, started: float, finished: float, inputs: int, inflight: int, ok: bool) -> None:
        self.calls += 1
        self.latency += finished - started
        self.peak_inflight = max(self.peak_inflight, inflight)
        self.first_start = min(self.first_start, started)
        if not ok:
            self.failed += 1
            return
        self.inputs += inputs
        # Busy time, the union of the calls' spans (they finish roughly in order): idle gaps
        # between bursts of load do not count as slow throughput.
        self.busy += max(0.0, finished - max(started, self.busy_until))
        self.busy_until = max(self.busy_until, finished)


@dataclass(frozen=True, slots=True)
class Reading:
    """One window's result: inputs per second, mean call latency, and their score."""

    throughput: float
    latency: float
    score: float
    peak_inflight: int

    @classmethod
    def of(cls, window: Window) -> Reading:
        ok = window.calls - window.failed
        throughput = window.inputs / window.busy if window.busy > 0 else 0.0
        latency = max(window.latency / window.calls, 1e-6)
        score = math.log(max(throughput, 1e-9)) - LATENCY_WEIGHT * math.log(latency)
        return cls(throughput, latency, score if ok else -math.inf, window.peak_inflight)


class ConcurrencyLimit:
    """The controller of one batcher. `limit` is how many upstream calls may run at once."""

    def __init__(self, bound: int, now: float, initial: int = 4) -> None:
        self.bound = max(1, bound)
        self.limit = min(max(1, initial), self.bound)
        self.held = self.limit  # the limit probes start from and return to
        self.held_reading: Reading | None = None
        self.probe: int | None = None  # the limit under trial, if any
        self.up = True  # the direction of the next probe
        self.boost = 1  # step multiplier: doubles with each step kept in one direction
        self.hold = 1  # windows to spend at the held limit before the next probe
        self.held_windows = 0
        self.window = Window(now)

    def sample(
        self,
        started: float,
        finished: float,
        inputs: int,
        inflight: int,
        ok: bool,
        bound: int,
    ) -> int:
        """One finished upstream call: when it started and finished, the inputs it carried, the
        calls in flight when it started (itself included), whether it succeeded, and the bound
        now. Returns the limit from now on."""
        self.rebound(bound, finished)
        if started < self.window.opened:
            return self.limit  # started under an earlier limit: says nothing of this one
        w = self.window
        w.add(started, finished, inputs, inflight, ok)
        elapsed = finished - w.first_start
        enough = w.calls >= max(MIN_WINDOW_CALLS, WINDOW_ROUNDS * self.limit)
        if (enough and elapsed >= MIN_WINDOW_S) or (
            elapsed >= MAX_WINDOW_S and w.calls >= MIN_WINDOW_CALLS
        ):
            self._decide(Reading.of(w), w.failed / w.calls, finished)
        return self.limit

    # Decisions, once a window is complete.
    def _decide(self, reading: Reading, failed_share: float, now: float) -> None:
        if failed_share >= FAILED_SHARE:
            self._settle(max(1, math.floor(self.limit * DECREASE)), None, now)
            return
        if self.probe is None:
            self._held(reading, now)
        else:
            self._judge(reading, now)

    def _held(self, reading: Reading, now: float) -> None:
        """A window at the held limit: refresh its reading; probe when the hold is over."""
        if reading.peak_inflight < self.held:
            # Fewer calls were needed than allowed (as gradient2's "app limited"): the limit
            # in force is what was used, and probes start from there.
            self.limit = self.held = max(1, reading.peak_inflight)
        last = self.held_reading
        if last is not None and (
            abs(math.log(max(reading.throughput, 1e-9) / max(last.throughput, 1e-9))) > SHIFT
            or abs(math.log(reading.latency / last.latency)) > SHIFT
        ):
            # Load or upstream speed changed: the held reading is stale; probe again soon.
            self.hold, self.boost, self.held_windows = 1, 1, 0
            self.held_reading = reading
            self.window = Window(now)
            return
        self.held_reading = reading if last is None else _mean(last, reading)
        self.held_windows += 1
        if self.held_windows >= self.hold:
            self._try(now)
        else:
            self.window = Window(now)

    def _try(self, now: float) -> None:
        """Start a probe one step away from the held limit (the other way at a bound)."""
        up = self.up
        if (up and self.held >= self.bound) or (not up and self.held <= 1):
            up = not up
        # Up at least 2: one more call may gain nothing where two do (a pass running and the
        # next one forming), and a plateau of one step must not hold the climb.
        step = (max(2, self.held // 2) if up else max(1, self.held // 3)) * self.boost
        target = min(self.bound, self.held + step) if up else max(1, self.held - step)
        if target == self.held:  # bound is 1
            self.held_windows = 0
            self.window = Window(now)
            return
        self.up = up
        self.probe = target
        self.limit = target
        self.window = Window(now)

    def _judge(self, reading: Reading, now: float) -> None:
        """A window at the probed limit: keep it if the score rose by more than the margin."""
        held = self.held_reading
        assert self.probe is not None and held is not None
        unused = self.probe > self.held and reading.peak_inflight <= self.held
        if not unused and reading.score - held.score > MARGIN:
            # Kept: go on the same way, with a longer step.
            self.held, self.held_reading = self.probe, reading
            self.probe = None
            if self.held >= self.bound if self.up else self.held <= 1:
                self.boost, self.hold, self.held_windows = 1, HOLD_WINDOWS, 1
                self.window = Window(now)
                return
            self.boost = min(self.boost * 2, 64)
            self.hold = 1
            self.held_windows = 1  # this window counts as one at the new held limit
            self._try(now)
            return
        # Refused (or the new calls found nothing to carry): back, the other way next time,
        # and wait longer before the next probe.
        self.probe = None
        self.limit = self.held
        self.up = not self.up
        self.boost = 1
        self.hold = min(self.hold * 2, MAX_HOLD_WINDOWS) if self.hold > 1 else HOLD_WINDOWS
        self.held_windows = 0
        self.window = Window(now)

    def _settle(self, limit: int, reading: Reading | None, now: float) -> None:
        """Hold `limit` from now on, measured afresh."""
        self.limit = self.held = min(limit, self.bound)
        self.held_reading = reading
        self.probe = None
        self.boost, self.hold, self.held_windows = 1, HOLD_WINDOWS, 0
        self.up = True
        self.window = Window(now)

    def rebound(self, bound: int, now: float) -> None:
        """A new bound (settings reloaded, TEI's permits read again): the limit stays within."""
        bound = max(1, bound)
        if bound == self.bound:
            return
        self.bound = bound
        if self.limit > bound or self.held > bound:
            self._settle(min(self.held, bound), None, now)


def _mean(a: Reading, b: Reading) -> Reading:
    """The held limit's reading: the last two windows, equally weighted."""
    throughput = (a.throughput + b.throughput) / 2
    latency = (a.latency + b.latency) / 2
    score = math.log(max(throughput, 1e-9)) - LATENCY_WEIGHT * math.log(latency)
    return Reading(throughput, latency, score, max(a.peak_inflight, b.peak_inflight))
