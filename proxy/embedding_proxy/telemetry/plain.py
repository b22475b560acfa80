"""Counters and histograms kept as plain numbers, for what is counted on every request.

prometheus-client's metrics take a lock for every increment and walk the buckets in Python for
every observation: about a tenth of the proxy's instructions per request went there. A proxy
process serves from one thread (its event loop), so a plain number does the same work. These
families export exactly what prometheus-client's `Counter` and `Histogram` export (same samples,
same order, `_created` included), through a collector read at scrape time."""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# prometheus-client's own switch for the `_created` samples.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)


class Count:
    """One counter series: add to `value` (never less than 0)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class Spread:
    """One histogram series: `counts[i]` observations in bucket i alone (not cumulative)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # upper bounds, the last +Inf
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are `le`, less than or equal.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], Count | Spread] = {}
        if not self.labelnames:
            self.labels()  # a series without labels is exported from the start, as prometheus's
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str, **named: str) -> Count | Spread:
        raise NotImplementedError

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def clear(self) -> None:
        self._series.clear()

    def _labels(self, values: tuple[str, ...], named: dict[str, str]) -> tuple[str, ...]:
        if named:
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, given {values}")
        return tuple(str(v) for v in values)


class Counts(_Family):
    """A counter family (`<name>_total`, `<name>_created` per series)."""

    kind = "counter"

    def labels(self, *values: str, **named: str) -> Count:
        key = self._labels(values, named)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Count()
        return series  # type: ignore[return-value]

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        for values, series in self._series.items():
            labels = dict(zip(self.labelnames, values, strict=True))
            metric.samples.append(Sample(self.name + "_total", labels, series.value))
            if _CREATED:
                metric.samples.append(Sample(self.name + "_created", labels, series.created))
        return [metric]


class Spreads(_Family):
    """A histogram family (`_bucket`, `_count`, `_sum`, `_created` per series)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bounds = (*(float(b) for b in buckets), float("inf"))
        self._les = [floatToGoString(b) for b in self.bounds]
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: str, **named: str) -> Spread:
        key = self._labels(values, named)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Spread(self.bounds)
        return series  # type: ignore[return-value]

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        samples = metric.samples
        for values, series in self._series.items():
            labels = dict(zip(self.labelnames, values, strict=True))
            total = 0
            for le, count in zip(self._les, series.counts, strict=True):  # type: ignore[union-attr]
                total += count
                samples.append(Sample(self.name + "_bucket", {**labels, "le": le}, float(total)))
            samples.append(Sample(self.name + "_count", labels, float(total)))
            samples.append(Sample(self.name + "_sum", labels, series.sum))  # type: ignore[union-attr]
            if _CREATED:
                samples.append(Sample(self.name + "_created", labels, series.created))
        return [metric]
