"""Reading a proxy's /metrics page, as rendered by the proxy's own exporter, so the names the
autoscaler reads are checked against the names the proxy writes."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from embedding_proxy.telemetry import metrics as proxy_metrics
from embedding_proxy.telemetry.metrics import Metrics
from embedding_proxy_operator.logic import plan, reloads, scrape
from embedding_proxy_operator.logic.hpa import History, decide
from embedding_proxy_operator.logic.hpa_policy import Policy
from embedding_proxy_operator.logic.scrape import ProxyReading, config_version, parse_metrics


def page(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def busy_proxy(depth: float, version: str | None = "3f9c0a1b2e") -> Metrics:
    m = Metrics()
    m.queue_depth.set(depth / 2)  # the instantaneous gauges must not be mistaken for the signal
    m.inflight_inputs.set(depth / 2)
    m.queue_depth_avg.set(depth)
    m.upstream_up.set(1)
    if version is not None:
        m.set_config_version(version)
    m.requests.labels(route="/embed", status="200").inc(5)
    m.batch_size.observe(32)
    return m


def test_names_are_the_proxys() -> None:
    assert scrape.QUEUE_DEPTH_AVG == proxy_metrics.QUEUE_DEPTH_AVG
    assert scrape.CONFIG_INFO == proxy_metrics.CONFIG_INFO
    # Combined over workers by min: 0 when any of them finds TEI down.
    assert scrape.UPSTREAM_UP in proxy_metrics.GAUGE_RULES


@pytest.mark.parametrize("depth", [0.0, 0.5, 64.0, 1234.25])
def test_reads_the_signal_and_version_from_the_real_exporter(depth: float) -> None:
    reading = parse_metrics(page(busy_proxy(depth)))
    assert reading == ProxyReading(
        queue_depth_avg=depth, config_version="3f9c0a1b2e", upstream_up=True
    )
    assert reading.load == depth


def test_a_fresh_proxy_reads_zero_and_no_version() -> None:
    # Until it has asked its TEI, a proxy says upstream_up 0.
    assert parse_metrics(page(Metrics())) == ProxyReading(
        queue_depth_avg=0.0, config_version=None, upstream_up=False
    )


def test_after_a_reload_only_the_new_version_is_reported() -> None:
    m = busy_proxy(10, version="old")
    m.set_config_version("new")
    assert config_version(page(m)) == "new"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<html><body>502 Bad Gateway</body></html>",
        'embedding_proxy_queue_depth_avg{broken="x" 3\n',
        "embedding_proxy_queue_depth_avg not-a-number\n",
    ],
)
def test_an_unreadable_page_reads_as_nothing(text: str) -> None:
    assert parse_metrics(text) == ProxyReading()


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-1"])
def test_an_unusable_value_reads_as_no_value(value: str) -> None:
    text = (
        "# TYPE embedding_proxy_queue_depth_avg gauge\n"
        f"embedding_proxy_queue_depth_avg {value}\n"
        'embedding_proxy_config_info{version="v1"} 1.0\n'
    )
    assert parse_metrics(text) == ProxyReading(queue_depth_avg=None, config_version="v1")


def test_no_page_reads_as_no_value() -> None:
    assert scrape.queue_depth_avg(None) is None
    assert scrape.config_version(None) is None


def test_pages_feed_the_autoscaler() -> None:
    # Three proxies at 128 and one that did not answer: a scale-up with the silent pod counted
    # as idle, ceil(4 x (3 x 128 + 0) / 4 / 64) = 6.
    texts = [page(busy_proxy(128)) for _ in range(3)] + [None]
    samples = {f"tei-{i}": scrape.queue_depth_avg(t) for i, t in enumerate(texts)}
    d = decide(4, samples, Policy(), History(), 0.0)
    assert (d.pods_measured, d.pods_missing, d.desired_replicas) == (3, 1, 6)


def test_a_proxy_whose_tei_is_down_is_no_load() -> None:
    """A hung TEI fills its proxy's queue; more replicas would not drain it. Two proxies at 128
    whose TEI answers and one at 4096 whose TEI does not: the third counts as a pod without a
    value, so the autoscaler scales for the two, ceil(3 x (2 x 128 + 0) / 3 / 64) = 4, not for a
    queue of 4096."""
    hung = busy_proxy(4096)
    hung.upstream_up.set(0)
    reading = parse_metrics(page(hung))
    assert reading.upstream_up is False and reading.queue_depth_avg == 4096
    assert reading.load is None
    pages = [page(busy_proxy(128)), page(busy_proxy(128)), page(hung)]
    samples = {f"tei-{i}": parse_metrics(t).load for i, t in enumerate(pages)}
    d = decide(3, samples, Policy(), History(), 0.0)
    assert (d.pods_measured, d.pods_missing, d.desired_replicas) == (2, 1, 4)
    # With every TEI down there is nothing to scale on: the replicas stay.
    down = {f"tei-{i}": parse_metrics(page(hung)).load for i in range(3)}
    assert decide(3, down, Policy(), History(), 0.0).desired_replicas == 3


def test_configapplied_names_the_pods_behind_and_their_failed_reloads() -> None:
    """ConfigApplied comes from what the proxies say: one runs the new config, one still the
    old one after failing to load the new file twice, one did not answer."""
    on = busy_proxy(1, version="new")
    behind = busy_proxy(1, version="old")
    behind.config_reloads.labels(result="failed").inc(2)
    pages = {"tei-a": page(on), "tei-b": page(behind), "tei-c": None}
    readings = {n: parse_metrics(t) if t else ProxyReading() for n, t in pages.items()}
    assert readings["tei-b"].failed_reloads == 2 and readings["tei-a"].failed_reloads is None
    lagging = [
        plan.lagging(n, r.config_version, r.failed_reloads)
        for n, r in readings.items()
        if r.config_version != "new"
    ]
    fact = plan.config_fact(3, 1, "new", lagging)
    assert (fact.status, fact.reason) == ("False", "Rolling")
    assert fact.message == (
        "1 of 3 ready pods run config new; not yet: tei-b (serves old, 2 failed reloads), "
        "tei-c (did not say)"
    )
    many = [f"tei-{i} (did not say)" for i in range(8)]
    assert plan.config_fact(9, 1, "new", many).message.endswith("tei-4 (did not say) and 3 more")
    assert plan.config_fact(3, 3, "new").status == "True"


def test_a_pod_that_failed_to_load_its_file_since_it_loaded_the_version_is_not_applied() -> None:
    """A proxy that cannot load the file it was given keeps serving the version it had, the
    current one: only its failed-reload count says so. From the proxy's own exporter."""
    proxy = busy_proxy(1, version="v2")
    proxy.config_reloads.labels(result="ok").inc()
    proxy.config_reloads.labels(result="failed").inc(3)  # failures long ago, before v2
    seen = reloads.track({}, {"tei-a": parse_metrics(page(proxy))})
    assert seen["tei-a"].failed_since == 0  # first seen: counts as loaded then
    assert reloads.track(seen, {"tei-a": parse_metrics(page(proxy))})["tei-a"].failed_since == 0

    proxy.config_reloads.labels(result="failed").inc()  # the file edited into broken YAML
    reading = parse_metrics(page(proxy))
    assert (reading.config_version, reading.ok_reloads, reading.failed_reloads) == ("v2", 1, 4)
    failing = reloads.track(seen, {"tei-a": reading})
    assert failing["tei-a"].failed_since == 1
    assert reloads.track(failing, {"tei-a": reading})["tei-a"].failed_since == 1  # it stays
    message = plan.lagging("tei-a", "v2", 4, failing["tei-a"].failed_since)
    assert (
        message == "tei-a (serves v2, but failed to load its config file since (1 failed reloads))"
    )
    fact = plan.config_fact(1, 0, "v2", [message])
    assert (fact.status, fact.reason) == ("False", "Rolling")
    assert "tei-a (serves v2, but failed to load its config file since" in fact.message

    proxy.config_reloads.labels(result="ok").inc()  # the file put back, and loaded
    assert reloads.track(failing, {"tei-a": parse_metrics(page(proxy))})["tei-a"].failed_since == 0
    # A restarted proxy (its counts start again) read the file afresh at its start.
    fresh = busy_proxy(1, version="v2")
    assert reloads.track(failing, {"tei-a": parse_metrics(page(fresh))})["tei-a"].failed_since == 0
    # A pod on another version is behind for that reason, whatever its counts.
    other = reloads.track(failing, {"tei-a": parse_metrics(page(busy_proxy(1, version="v3")))})
    assert other["tei-a"].failed_since == 0
