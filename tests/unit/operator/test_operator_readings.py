"""The operator's metrics from what it reads: batch fill between two scrapes of a real proxy
exporter's page, series that follow pods and EmbeddingProxies away, and the port setting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest

from embedding_proxy.telemetry.metrics import Metrics
from embedding_proxy_operator.io.metrics import OperatorMetrics, PodReading
from embedding_proxy_operator.logic import batchfill
from embedding_proxy_operator.model.settings import Options


def page(batches: list[int], limit: int) -> str:
    metrics = Metrics()
    for size in batches:
        metrics.batch_size.observe(size)
    metrics.batch_size_limit.set(limit)
    return generate_latest(metrics.registry).decode()


def test_batch_fill_counts_only_the_calls_since_the_last_scrape() -> None:
    first = batchfill.parse(page([32, 32], 32))
    second = batchfill.parse(page([32, 32, 8, 8], 32))
    assert first is not None and second is not None
    assert first.fill_since(None) == 1.0
    assert second.fill_since(first) == 0.25
    assert second.fill_since(second) is None  # no call in between: no figure, not 0
    # Counters that went back: the proxy restarted; count from its start.
    assert first.fill_since(second) == 1.0


def test_batch_fill_needs_every_figure() -> None:
    assert batchfill.parse("embedding_proxy_batch_size_limit 32\n") is None
    assert batchfill.parse("not a metrics page {") is None
    assert batchfill.parse(page([], 32)).fill_since(None) is None  # type: ignore[union-attr]


def reading(depth: float | None, batches: list[int], on_config: bool = True) -> PodReading:
    return PodReading(depth, batchfill.parse(page(batches, 32)), on_config)


def exported(m: OperatorMetrics) -> str:
    return generate_latest(m.registry).decode()


def test_series_follow_pods_and_proxies_away() -> None:
    m = OperatorMetrics()
    auto = SimpleNamespace(
        enabled=True, min_replicas=1, max_replicas=4, target_queue_depth_per_pod=64
    )
    deployment = {"status": {"replicas": 2, "readyReplicas": 2}}
    scaling = {"desiredReplicas": 3, "lastScaleTime": "2026-01-02T03:04:05Z"}
    pods = {"a": reading(70.0, [16]), "b": reading(None, [32], on_config=False)}
    status = m.observe("ml", "tei", deployment, auto, "Scaling", scaling, pods)
    assert status == {
        "pods": [
            {"name": "a", "queueDepth": 70, "batchFillPercent": 50},
            {"name": "b", "batchFillPercent": 100},
        ],
        "queueDepth": 70,
        "batchFillPercent": 75,
    }
    text = exported(m)
    assert (
        'embedding_proxy_operator_desired_replicas{embeddingproxy="tei",namespace="ml"} 3.0' in text
    )
    assert 'pod_queue_depth{embeddingproxy="tei",namespace="ml",pod="a"} 70.0' in text
    assert (
        'pod="b"' in text
        and 'pod_queue_depth{embeddingproxy="tei",namespace="ml",pod="b"}' not in text
    )
    assert 'pod_batch_fill{embeddingproxy="tei",namespace="ml",pod="a"} 0.5' in text
    assert 'pods_on_config_version{embeddingproxy="tei",namespace="ml"} 1.0' in text
    assert "last_scale_timestamp_seconds" in text and "1.767323045e+09" in text

    # Pod b is gone, the state changed, autoscaling was switched off.
    auto.enabled = False
    status = m.observe("ml", "tei", deployment, auto, "Disabled", None, {"a": reading(1.0, [16])})
    # The same counts as before: no call since, so no fill figure rather than a stale one.
    assert status == {
        "pods": [{"name": "a", "queueDepth": 1}],
        "queueDepth": 1,
        "batchFillPercent": None,
    }
    text = exported(m)
    assert "pod_batch_fill{" not in text
    assert 'pod="b"' not in text
    assert 'state="Scaling"' not in text and 'state="Disabled"} 1.0' in text
    assert "max_replicas{" not in text and "desired_replicas{" not in text

    m.failed("ml", "tei")
    m.forget("ml", "tei")
    assert 'embeddingproxy="tei"' not in exported(m)


def test_metrics_port_is_off_by_default_and_validated() -> None:
    assert Options.from_env({}).metrics_port == 0
    assert Options.from_env({"EMBEDDING_PROXY_OPERATOR_METRICS_PORT": "8081"}).metrics_port == 8081
    for bad in ("-1", "http", "70000"):
        with pytest.raises(ValueError, match="METRICS_PORT"):
            Options.from_env({"EMBEDDING_PROXY_OPERATOR_METRICS_PORT": bad})
