"""Every Prometheus metric the proxy exports. The names are an interface: the operator's
autoscaler and users' dashboards read them, and the README documents each one."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import HistogramMetricFamily

from ..batching.lanes import LaneState
from .plain import Count, Counts, Spread, Spreads

PREFIX = "embedding_proxy_"

# The autoscaling signal (read by the operator): see README, "Autoscaling signal".
QUEUE_DEPTH_AVG = PREFIX + "queue_depth_avg"
CONFIG_INFO = PREFIX + "config_info"

# With several worker processes the pod's figure of a sample is the sum over workers
# (podmetrics.py), gauges included: they are amounts. These gauges are a setting or a state and
# take the max or min instead; a gauge added later that is not an amount belongs here.
GAUGE_RULES = {
    CONFIG_INFO: "max",  # 1 for each version a worker runs
    PREFIX + "batch_size_limit": "max",  # a limit per call, the same in every worker
    PREFIX + "upstream_up": "min",  # 0 if any worker finds TEI not answering
}

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """One set of metrics on its own registry (one per app, so tests never share state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            PREFIX + "queue_depth",
            "Inputs waiting in the proxy's queues, not yet sent.",
            registry=r,
        )
        self.inflight_inputs = Gauge(
            PREFIX + "inflight_inputs", "Inputs inside upstream calls now.", registry=r
        )
        self.queue_depth_avg = Gauge(
            QUEUE_DEPTH_AVG,
            "10 s moving average of queued plus in-flight inputs: the autoscaling signal.",
            registry=r,
        )
        self.upstream_inflight = Gauge(
            PREFIX + "upstream_inflight", "Upstream calls in progress.", registry=r
        )
        self.groups = Gauge(PREFIX + "groups", "Parameter groups with a live queue.", registry=r)
        self.batch_size_limit = Gauge(
            PREFIX + "batch_size_limit",
            "Most inputs one upstream call may hold now: the setting, capped by TEI's limit.",
            registry=r,
        )
        self.upstream_concurrency_limit = Gauge(
            PREFIX + "upstream_concurrency_limit",
            "Upstream calls that may run at once now: max_concurrency, or what auto has found.",
            registry=r,
        )
        self.upstream_up = Gauge(
            PREFIX + "upstream_up",
            "1 while the upstream answers its health check, 0 while it does not.",
            registry=r,
        )
        self.requests = Counts(
            PREFIX + "requests",
            "Client requests answered, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.inputs = Counts(
            PREFIX + "inputs",
            "Inputs in the client requests answered, by route and status code.",
            ["route", "status"],
            registry=r,
        )
        self.request_duration = Spreads(
            PREFIX + "request_duration_seconds",
            "Time from a client request's arrival to its answer.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Spreads(
            PREFIX + "batch_size",
            "Inputs per upstream call.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Spreads(
            PREFIX + "upstream_duration_seconds",
            "Duration of upstream calls, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_responses = Counts(
            PREFIX + "upstream_responses",
            "Upstream calls by route and outcome (status code, or 'error').",
            ["route", "status"],
            registry=r,
        )
        self.rejections = Counts(
            PREFIX + "rejections",
            "Inputs or requests refused by the proxy itself, by reason.",
            ["reason"],
            registry=r,
        )
        self.retries = Counts(
            PREFIX + "upstream_retries",
            "Upstream calls retried, by reason.",
            ["reason"],
            registry=r,
        )
        self.config_info = Gauge(
            CONFIG_INFO,
            "Always 1; the label says which config version runs.",
            ["version"],
            registry=r,
        )
        self.config_reloads = Counts(
            PREFIX + "config_reloads",
            "Config reloads by result (ok, failed).",
            ["result"],
            registry=r,
        )

        self.lane_queue_depth = Gauge(
            PREFIX + "lane_queue_depth", "Inputs waiting now, by lane.", ["lane"], registry=r
        )
        self.lane_rejected = Counts(
            PREFIX + "lane_rejected",
            "Requests refused with 429 because their lane's queue was full, by lane.",
            ["lane"],
            registry=r,
        )
        self.lane_wait = Spreads(
            PREFIX + "lane_wait_seconds",
            "Time an input waited in the queue before its upstream call, by lane.",
            ["lane"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._lane_waits: dict[str, Spread] = {}  # labelled children, looked up once
        # The wait of all lanes together, summed from the lanes' at scrape time: one histogram
        # observation per input on the hot path, not two.
        r.register(_AllLanes(self.lane_wait))

    def observe_batch(self, batch: Sequence[Any], now: float) -> None:
        """A batch left: its size, and each input's queue wait (in all and by lane)."""
        self.batch_size.observe(len(batch))
        waits = self._lane_waits
        for entry in batch:
            name = entry.lane.name
            child = waits.get(name)
            if child is None:
                child = waits[name] = self.lane_wait.labels(lane=name)
            wait = now - entry.enqueued
            child.counts[bisect_left(child.bounds, wait)] += 1  # Spread.observe, inlined: per input
            child.sum += wait

    def count_full(self, lane: str) -> None:
        self.lane_rejected.labels(lane=lane).inc()

    def set_lanes(self, lanes: Sequence[LaneState]) -> None:
        """The per-lane gauges, for the lanes configured now."""
        self.lane_queue_depth.clear()
        for lane in lanes:
            self.lane_queue_depth.labels(lane=lane.name).set(lane.queued)

    def set_config_version(self, version: str) -> None:
        self.config_info.clear()
        self.config_info.labels(version=version).set(1)


class _AllLanes:
    """`embedding_proxy_queue_wait_seconds`: every lane's `lane_wait_seconds` added up (a lane
    dropped by a reload keeps its series, so the sum never goes back)."""

    def __init__(self, lanes: Spreads) -> None:
        self.lanes = lanes

    def collect(self) -> list[HistogramMetricFamily]:
        buckets = {str(float(b)): 0.0 for b in _LATENCY_BUCKETS} | {"+Inf": 0.0}
        total = 0.0
        for family in self.lanes.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[sample.labels["le"]] += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
        return [
            HistogramMetricFamily(
                PREFIX + "queue_wait_seconds",
                "Time an input waited in the queue before its upstream call.",
                buckets=list(buckets.items()),
                sum_value=total,
            )
        ]


class Tally:
    """Counting each answered request: its route and status, duration and inputs, and why it was
    refused. Labelled children are looked up once and kept: labels() is costly per request."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[str, int], tuple[Count, Spread, Count]] = {}

    def observe(self, route: str, status: int, started: float, inputs: int = 0) -> None:
        children = self._children.get((route, status))
        if children is None:
            m = self.metrics
            children = self._children[(route, status)] = (
                m.requests.labels(route=route, status=str(status)),
                m.request_duration.labels(route=route),
                m.inputs.labels(route=route, status=str(status)),
            )
        children[0].value += 1
        took = time.perf_counter() - started
        spread = children[1]  # Spread.observe, inlined: per request
        spread.counts[bisect_left(spread.bounds, took)] += 1
        spread.sum += took
        if inputs:
            children[2].value += inputs

    def count_rejection(self, error: Any) -> None:  # a ProxyError: its reason, when it has one
        if error.reason is not None:
            self.metrics.rejections.labels(reason=error.reason).inc()
