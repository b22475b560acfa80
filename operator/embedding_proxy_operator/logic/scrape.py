"""Pure reading of a proxy's `/metrics` page: the autoscaling signal, the config version and
whether its TEI answers.

The metric names are the proxy's interface (its README lists them); a unit test renders the
proxy's own exporter and parses it here, so a rename on either side fails there."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

QUEUE_DEPTH_AVG = "embedding_proxy_queue_depth_avg"
CONFIG_INFO = "embedding_proxy_config_info"
UPSTREAM_UP = "embedding_proxy_upstream_up"
CONFIG_RELOADS = "embedding_proxy_config_reloads"


@dataclass(frozen=True)
class ProxyReading:
    # 10 s average of queued plus in-flight inputs; None when absent or not a usable number.
    queue_depth_avg: float | None = None
    # The `version` label of `embedding_proxy_config_info{version="..."} 1`; None when absent.
    config_version: str | None = None
    # Whether the proxy finds its TEI answering (`embedding_proxy_upstream_up`); None: not said.
    upstream_up: bool | None = None
    # Reloads of the config file that failed since the proxy started (the file kept as it was),
    # and those that succeeded.
    failed_reloads: float | None = None
    ok_reloads: float | None = None

    @property
    def load(self) -> float | None:
        """The autoscaling signal: the queue, unless TEI is down. A hung or stopped TEI fills
        the queue of its pod's proxy, but more replicas would not drain it: the pod counts as
        one without a value (the autoscaler then neither scales up for it nor down past it)."""
        return None if self.upstream_up is False else self.queue_depth_avg


def parse_metrics(text: str) -> ProxyReading:
    """Both values from one page. A page that does not parse reads as nothing at all: a pod
    whose metrics cannot be trusted counts as a pod without a metric."""
    depth: float | None = None
    version: str | None = None
    up: bool | None = None
    failed: float | None = None
    ok: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            if family.name == QUEUE_DEPTH_AVG:
                for sample in family.samples:
                    if sample.name == QUEUE_DEPTH_AVG and not sample.labels:
                        depth = _usable(sample.value)
            elif family.name == UPSTREAM_UP:
                for sample in family.samples:
                    if sample.name == UPSTREAM_UP and not sample.labels:
                        up = sample.value >= 1
            elif family.name == CONFIG_RELOADS:
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    if sample.labels.get("result") == "failed":
                        failed = _usable(sample.value)
                    elif sample.labels.get("result") == "ok":
                        ok = _usable(sample.value)
            elif family.name == CONFIG_INFO:
                for sample in family.samples:
                    if sample.value == 1 and sample.labels.get("version"):
                        version = sample.labels["version"]
    except (ValueError, TypeError, IndexError):
        return ProxyReading()
    return ProxyReading(
        queue_depth_avg=depth,
        config_version=version,
        upstream_up=up,
        failed_reloads=failed,
        ok_reloads=ok,
    )


def queue_depth_avg(text: str | None) -> float | None:
    """`embedding_proxy_queue_depth_avg` from a page, None for no page or no usable value."""
    return parse_metrics(text).queue_depth_avg if text is not None else None


def config_version(text: str | None) -> str | None:
    """The config version a proxy reports, None for no page or none reported."""
    return parse_metrics(text).config_version if text is not None else None


def _usable(value: float) -> float | None:
    # A gauge of queued inputs is never negative; NaN or infinity means a broken exporter.
    return float(value) if math.isfinite(value) and value >= 0 else None
