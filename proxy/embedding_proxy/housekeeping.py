"""The proxy's background chores: keep TEI's limits and health current (readiness follows the
upstream), sample the autoscaling signal, and tidy what idles (empty groups, changed key files,
idle rate buckets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .batching.batcher import Batcher
from .batching.policy import Caps
from .callers.auth import KeyStore
from .callers.ratelimit import RateLimiter
from .config.redaction import redact
from .config.settings import UpstreamConfig
from .telemetry.smoothing import MovingAverage
from .upstream.client import Upstream
from .upstream.errors import UpstreamError
from .upstream.info import UpstreamInfo

SAMPLE_SECONDS = 0.1  # the autoscaling signal is sampled this often ...
AVERAGE_SAMPLES = 100  # ... and averaged over this many samples (10 s)
TIDY_EVERY = 10  # samples between tidy-ups (1 s)
PROBE_SECONDS = 2.0  # TEI's /health is asked this often while it answers ...
REPROBE_SECONDS = 0.25  # ... and this often while it does not, so that /ready recovers quickly


class Tended(Protocol):
    """What the chores look after (the proxy's parts; the limiter is replaced on reload)."""

    batcher: Batcher[Any, Any, Any]
    upstream: Upstream
    keys: KeyStore
    limiter: RateLimiter


def caps_of(info: UpstreamInfo) -> Caps:
    """What TEI's /info says, as the limits the batcher keeps to."""
    return Caps(
        max_batch_size=info.max_client_batch_size,
        max_batch_tokens=info.max_batch_tokens,
        max_inflight_inputs=info.max_concurrent_requests,
    )


class Housekeeping:
    def __init__(self, parts: Tended, config: UpstreamConfig) -> None:
        self.parts = parts
        self.config = config
        # Queued and in-flight inputs (of signal_lanes), averaged: the `queue_depth_avg` metric.
        self.queue_depth_avg = MovingAverage(AVERAGE_SAMPLES)
        # A worker process keeps to its share of TEI's limits (shares.worker_caps).
        self.caps_share: Callable[[Caps], Caps] = lambda caps: caps

    async def sample_and_tidy(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            p = self.parts
            b = p.batcher
            self.queue_depth_avg.add(b.signal_depth)
            ticks += 1
            if ticks % TIDY_EVERY == 0:
                b.measure_rates(SAMPLE_SECONDS * TIDY_EVERY)
                b.drop_idle_groups()
                p.keys.refresh()
                p.upstream.refresh_key()
                p.limiter.forget_idle(asyncio.get_running_loop().time())

    async def watch_upstream(self) -> None:
        """Keep TEI's limits and health current; readiness follows the upstream. A batch call
        that finds TEI not answering turns the proxy unready at once and wakes this loop."""
        refresh = self.config.info_refresh_seconds
        next_info = 0.0
        up = self.parts.upstream
        while True:
            now = time.monotonic()
            losses = up.losses
            try:
                if up.info is None or now >= next_info:
                    info = await up.fetch_info()
                    self.parts.batcher.update(caps=self.caps_share(caps_of(info)))
                    next_info = now + refresh
                ok = await up.healthy()
                reason = "/health did not answer 200"
            except UpstreamError as e:
                ok = False
                reason = e.cause
            # A call that lost TEI while the probe ran has the last word; the probe is redone.
            if up.losses == losses:
                up.answering = ok
                if ok and up.info is not None:
                    up.state.up(up.info)
                elif not ok:
                    up.state.down(redact(reason))
            steady = up.answering and up.info is not None
            await up.wait_for_loss(PROBE_SECONDS if steady else REPROBE_SECONDS)
