"""The pod's metrics from its workers' own: pure, generic over whatever metrics exist.

Each worker hands over a snapshot of its registry (families of samples, as JSON); the pod's
figure for each sample (name + labels) is
- the sum over workers for counters, histograms and summaries (any metric added later included,
  whatever its labels), and for gauges, which are amounts (queue depth, inputs in flight, the
  autoscaling signal `queue_depth_avg`): so a pod reads the same whatever its number of workers;
- for the few gauges that are a setting or a state rather than an amount (`GAUGE_RULES` in
  metrics.py), the max or min over workers;
- for `*_created` samples (when a series began), the earliest.
Counts of workers that have exited are kept (`retire`), so a restart never makes a counter drop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

# [family name, type, help, [[sample name, labels, value], ...]]
Family = list[Any]
Snapshot = list[Family]
Key = tuple[str, tuple[tuple[str, str], ...]]


def snapshot(registry: CollectorRegistry) -> Snapshot:
    return [
        [m.name, m.type, m.documentation, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in registry.collect()
    ]


def encode(snap: Snapshot) -> bytes:
    return orjson.dumps(snap)  # NaN becomes null; decode turns it back


def decode(data: bytes) -> Snapshot:
    snap = orjson.loads(data)
    if not isinstance(snap, list):
        raise ValueError("a metrics snapshot is a list of families")
    for family in snap:
        for sample in family[3]:
            if sample[2] is None:
                sample[2] = math.nan
    return snap


def _combine(kind: str, name: str, sample: str, rules: Mapping[str, str]) -> str:
    if sample.endswith("_created"):
        return "min"
    if kind == "gauge":
        return rules.get(name, "sum")
    return "sum"


def merge(snaps: Sequence[Snapshot], rules: Mapping[str, str]) -> Snapshot:
    """The pod's snapshot from the workers' (see the module's doc for how each sample combines)."""
    families: dict[str, tuple[str, str, dict[Key, list[Any]]]] = {}
    for snap in snaps:
        for name, kind, doc, samples in snap:
            entry = families.get(name)
            if entry is None:
                entry = families[name] = (kind, doc, {})
            merged = entry[2]
            for sample, labels, value in samples:
                key = (sample, tuple(sorted(labels.items())))
                have = merged.get(key)
                if have is None:
                    merged[key] = [sample, labels, value]
                    continue
                how = _combine(entry[0], name, sample, rules)
                if how == "max":
                    have[2] = max(have[2], value)
                elif how == "min":
                    have[2] = min(have[2], value)
                else:
                    have[2] += value
    return [
        [name, kind, doc, list(merged.values())] for name, (kind, doc, merged) in families.items()
    ]


def cumulative(snap: Snapshot) -> Snapshot:
    """What of a worker's snapshot outlives it: its counts (not gauges, not start times)."""
    out = []
    for name, kind, doc, samples in snap:
        if kind in ("gauge", "info", "stateset"):
            continue
        kept = [s for s in samples if not s[0].endswith("_created")]
        if kept:
            out.append([name, kind, doc, kept])
    return out


class _Families:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        for name, kind, doc, samples in self.snap:
            metric = Metric(name, doc, kind)
            for sample, labels, value in samples:
                metric.add_sample(sample, labels, value)
            yield metric


def render(snap: Snapshot) -> bytes:
    """Prometheus' text format."""
    from prometheus_client import generate_latest

    return generate_latest(_Families(snap))  # type: ignore[arg-type]
