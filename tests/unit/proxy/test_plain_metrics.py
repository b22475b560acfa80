"""The plain-number counters and histograms export what prometheus-client's own would, sample
for sample, for the same observations (telemetry/plain.py)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from embedding_proxy.telemetry.plain import Counts, Spreads

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 1, 30)
# On every bound, just above and below it, 0, and past the last.
VALUES = [0.0, 0.001, 0.0010001, 0.0025, 0.004999, 0.005, 0.01, 0.5, 1.0, 29.9, 30.0, 31.0, 1e9]


def _text(registry: CollectorRegistry) -> str:
    # `_created` holds the time a series began: the same place, not the same second.
    return re.sub(r"(_created\{?[^ ]*) \S+", r"\1 T", generate_latest(registry).decode())


def test_counters_export_what_prometheus_client_exports() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    a = Counter("x_requests", "Requests.", ["route", "status"], registry=theirs)
    b = Counts("x_requests", "Requests.", ["route", "status"], registry=ours)
    for route, status, amount in [("/embed", "200", 1), ("/embed", "429", 3), ("/embed", "200", 2)]:
        a.labels(route=route, status=status).inc(amount)
        b.labels(route=route, status=status).inc(amount)
    c = Counter("x_plain", "Unlabelled.", registry=theirs)
    d = Counts("x_plain", "Unlabelled.", registry=ours)
    c.inc(0.5)
    d.inc(0.5)
    assert _text(ours) == _text(theirs)
    assert 'x_requests_total{route="/embed",status="200"} 3.0' in _text(ours)


def test_histograms_export_what_prometheus_client_exports() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    a = Histogram("x_seconds", "Durations.", ["route"], buckets=BUCKETS, registry=theirs)
    b = Spreads("x_seconds", "Durations.", ["route"], buckets=BUCKETS, registry=ours)
    c = Histogram("x_size", "Sizes.", buckets=(1, 2, 4), registry=theirs)
    d = Spreads("x_size", "Sizes.", buckets=(1, 2, 4), registry=ours)
    assert _text(ours) == _text(theirs)  # an unlabelled one is exported before any observation
    for i, value in enumerate(VALUES):
        route = "/embed" if i % 3 else "/v1/embeddings"
        a.labels(route=route).observe(value)
        b.labels(route).observe(value)
        c.observe(i)
        d.observe(i)
    assert _text(ours) == _text(theirs)
    assert 'x_seconds_bucket{le="0.005",route="/embed"}' in _text(ours)


def test_counters_refuse_to_go_down_and_wrong_labels() -> None:
    counts = Counts("x_total", "Things.", ["reason"])
    with pytest.raises(ValueError):
        counts.labels(reason="a").inc(-1)
    with pytest.raises(ValueError):
        counts.labels("a", "b")
    with pytest.raises(KeyError):
        counts.labels(other="a")
