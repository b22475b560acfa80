"""The pod's metrics from its workers' snapshots."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from embedding_proxy.telemetry.metrics import GAUGE_RULES, Metrics
from embedding_proxy.workers import podmetrics


def samples(data: bytes) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(data.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def wire(registry: CollectorRegistry) -> podmetrics.Snapshot:
    return podmetrics.decode(podmetrics.encode(podmetrics.snapshot(registry)))


def test_counters_histograms_and_amounts_add_up_settings_do_not() -> None:
    a, b = Metrics(), Metrics()
    a.requests.labels(route="/embed", status="200").inc(3)
    b.requests.labels(route="/embed", status="200").inc(4)
    b.requests.labels(route="/embed", status="429").inc()
    a.batch_size.observe(3)
    b.batch_size.observe(40)
    a.queue_depth_avg.set(2.5)
    b.queue_depth_avg.set(1.0)
    for m in (a, b):
        m.set_config_version("v7")
        m.batch_size_limit.set(32)
    a.upstream_up.set(1)
    b.upstream_up.set(0)
    pod = samples(
        podmetrics.render(podmetrics.merge([wire(a.registry), wire(b.registry)], GAUGE_RULES))
    )
    assert pod["embedding_proxy_requests_total{route=/embed,status=200}"] == 7
    assert pod["embedding_proxy_requests_total{route=/embed,status=429}"] == 1
    assert pod["embedding_proxy_batch_size_count{}"] == 2
    assert pod["embedding_proxy_batch_size_sum{}"] == 43
    assert pod["embedding_proxy_batch_size_bucket{le=4.0}"] == 1
    assert pod["embedding_proxy_batch_size_bucket{le=64.0}"] == 2
    assert pod["embedding_proxy_queue_depth_avg{}"] == 3.5  # the pod's amount
    assert pod["embedding_proxy_config_info{version=v7}"] == 1
    assert pod["embedding_proxy_batch_size_limit{}"] == 32
    assert pod["embedding_proxy_upstream_up{}"] == 0


def test_one_worker_renders_as_the_registry_itself() -> None:
    a = Metrics()
    a.requests.labels(route="/embed", status="200").inc(3)
    a.batch_size.observe(7)
    from prometheus_client import generate_latest

    assert podmetrics.render(podmetrics.merge([wire(a.registry)], GAUGE_RULES)) == generate_latest(
        a.registry
    )


def test_metrics_added_later_are_merged_without_being_named() -> None:
    regs = [CollectorRegistry(), CollectorRegistry()]
    for i, r in enumerate(regs):
        c = Counter("embedding_proxy_lane_inputs", "per lane", ["lane"], registry=r)
        c.labels(lane="high").inc(i + 1)
        c.labels(lane="low").inc(10)
        h = Histogram("embedding_proxy_lane_wait_seconds", "w", ["lane"], registry=r)
        h.labels(lane="high").observe(0.01)
        Gauge("embedding_proxy_lane_depth", "d", ["lane"], registry=r).labels(lane="high").set(2)
    pod = samples(podmetrics.render(podmetrics.merge([wire(r) for r in regs], GAUGE_RULES)))
    assert pod["embedding_proxy_lane_inputs_total{lane=high}"] == 3
    assert pod["embedding_proxy_lane_inputs_total{lane=low}"] == 20
    assert pod["embedding_proxy_lane_wait_seconds_count{lane=high}"] == 2
    assert pod["embedding_proxy_lane_depth{lane=high}"] == 4


def test_a_retired_workers_counts_stay_and_its_gauges_go() -> None:
    gone, alive = Metrics(), Metrics()
    gone.requests.labels(route="/embed", status="200").inc(5)
    gone.queue_depth.set(9)
    alive.requests.labels(route="/embed", status="200").inc(2)
    retired = podmetrics.merge([[], podmetrics.cumulative(wire(gone.registry))], GAUGE_RULES)
    pod = samples(podmetrics.render(podmetrics.merge([wire(alive.registry), retired], GAUGE_RULES)))
    assert pod["embedding_proxy_requests_total{route=/embed,status=200}"] == 7
    assert pod["embedding_proxy_queue_depth{}"] == 0
