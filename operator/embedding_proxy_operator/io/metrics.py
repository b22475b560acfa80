"""The operator's own Prometheus metrics, served on its `/metrics` (EMBEDDING_PROXY_OPERATOR_
METRICS_PORT): what it decided for each EmbeddingProxy and what it read from the pods. The names
are an interface (the chart's dashboard and alert rules read them; docs/operator.md lists them).

Every series carries `namespace` and `embeddingproxy` (and `pod` for what one pod reported): the
EmbeddingProxy's namespace, not the operator's, so Prometheus must scrape this with honor_labels
(the chart's PodMonitor does) to join these series with the proxies' own on `namespace, pod`."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ..logic import batchfill
from ..logic.batchfill import BatchCounts
from ..logic.scrape import ProxyReading

PREFIX = "embedding_proxy_operator_"
PROXY = ("namespace", "embeddingproxy")
POD = (*PROXY, "pod")


@dataclass(frozen=True)
class PodReading:
    """What one ready pod's proxy reported at the last scrape (None: not reported)."""

    queue_depth: float | None
    batch: BatchCounts | None
    on_config: bool


class OperatorMetrics:
    """One registry per operator process (kept in kopf's memo, never global)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.current_replicas = Gauge(
            PREFIX + "current_replicas",
            "Replicas of the target Deployment (its status.replicas).",
            PROXY,
            registry=r,
        )
        self.ready_replicas = Gauge(
            PREFIX + "ready_replicas",
            "Ready replicas of the target Deployment.",
            PROXY,
            registry=r,
        )
        self.desired_replicas = Gauge(
            PREFIX + "desired_replicas",
            "Replicas the built-in autoscaler decided on at its last poll.",
            PROXY,
            registry=r,
        )
        self.min_replicas = Gauge(
            PREFIX + "min_replicas", "spec.autoscaling.minReplicas.", PROXY, registry=r
        )
        self.max_replicas = Gauge(
            PREFIX + "max_replicas", "spec.autoscaling.maxReplicas.", PROXY, registry=r
        )
        self.target_queue_depth = Gauge(
            PREFIX + "target_queue_depth",
            "spec.autoscaling.targetQueueDepthPerPod: inputs each proxy should hold.",
            PROXY,
            registry=r,
        )
        self.autoscaling_state = Gauge(
            PREFIX + "autoscaling_state",
            "1 for the reason of the Autoscaling condition now (Scaling, Stable, AtMaximum, ...).",
            (*PROXY, "state"),
            registry=r,
        )
        self.last_scale_time = Gauge(
            PREFIX + "last_scale_timestamp_seconds",
            "When the built-in autoscaler last changed the replicas (Unix time).",
            PROXY,
            registry=r,
        )
        self.pods_ready = Gauge(
            PREFIX + "pods_ready", "Ready pods of the target at the last poll.", PROXY, registry=r
        )
        self.pods_on_config = Gauge(
            PREFIX + "pods_on_config_version",
            "Ready pods whose proxy reported the config version the operator wrote last.",
            PROXY,
            registry=r,
        )
        self.pod_queue_depth = Gauge(
            PREFIX + "pod_queue_depth",
            "embedding_proxy_queue_depth_avg of one pod, as the last scrape read it.",
            POD,
            registry=r,
        )
        self.pod_batch_fill = Gauge(
            PREFIX + "pod_batch_fill",
            "Inputs per upstream call divided by the batch size limit, between the last two "
            "scrapes of one pod.",
            POD,
            registry=r,
        )
        self.reconcile_errors = Counter(
            PREFIX + "reconcile_errors",
            "Reconciliations or polls of an EmbeddingProxy that failed (and are retried).",
            PROXY,
            registry=r,
        )
        self._pods: dict[tuple[str, str], set[str]] = {}
        self._batches: dict[tuple[str, str], BatchCounts] = {}
        self._states: dict[tuple[str, str], str] = {}
        self._runner: web.AppRunner | None = None

    # ---- what the handlers call ------------------------------------------------------------

    def observe(
        self,
        namespace: str,
        name: str,
        deployment: Mapping[str, Any],
        autoscaling_spec: Any,
        state: str,
        scaling: Mapping[str, Any] | None,
        pods: Mapping[str, PodReading],
    ) -> dict[str, Any]:
        """One poll of an EmbeddingProxy: the target's replicas, the autoscaler's decision and
        the ready pods' readings. Series of pods that are gone are removed. Returns the status
        fields that say the same: `pods`, and the means `queueDepth` and `batchFillPercent`."""
        key = (namespace, name)
        status = deployment.get("status") or {}
        self.current_replicas.labels(*key).set(int(status.get("replicas", 0)))
        self.ready_replicas.labels(*key).set(int(status.get("readyReplicas", 0)))
        self.pods_ready.labels(*key).set(len(pods))
        self.pods_on_config.labels(*key).set(sum(1 for p in pods.values() if p.on_config))
        if autoscaling_spec.enabled:
            self.min_replicas.labels(*key).set(autoscaling_spec.min_replicas)
            self.max_replicas.labels(*key).set(autoscaling_spec.max_replicas)
            self.target_queue_depth.labels(*key).set(autoscaling_spec.target_queue_depth_per_pod)
        else:
            _remove(key, self.min_replicas, self.max_replicas, self.target_queue_depth)
        desired = (scaling or {}).get("desiredReplicas")
        if desired is not None:
            self.desired_replicas.labels(*key).set(int(desired))
        else:
            _remove(key, self.desired_replicas)
        scale_time = _unix_time((scaling or {}).get("lastScaleTime"))
        if scale_time is not None:
            self.last_scale_time.labels(*key).set(scale_time)
        before = self._states.get(key)
        if before is not None and before != state:
            _remove((*key, before), self.autoscaling_state)
        self.autoscaling_state.labels(*key, state).set(1)
        self._states[key] = state

        listed: list[dict[str, Any]] = []
        for pod, reading in sorted(pods.items()):
            labels = (*key, pod)
            entry: dict[str, Any] = {"name": pod}
            if reading.queue_depth is not None:
                self.pod_queue_depth.labels(*labels).set(reading.queue_depth)
                entry["queueDepth"] = round(reading.queue_depth)
            else:
                _remove(labels, self.pod_queue_depth)
            fill = self._fill(namespace, pod, reading.batch)
            if fill is not None:
                self.pod_batch_fill.labels(*labels).set(fill)
                entry["batchFillPercent"] = round(fill * 100)
            else:
                _remove(labels, self.pod_batch_fill)  # no call since the last scrape
            listed.append(entry)
        for pod in self._pods.get(key, set()) - set(pods):
            _remove((*key, pod), self.pod_queue_depth, self.pod_batch_fill)
            self._batches.pop((namespace, pod), None)
        self._pods[key] = set(pods)
        return status_fields(listed)

    def failed(self, namespace: str, name: str) -> None:
        self.reconcile_errors.labels(namespace, name).inc()

    def forget(self, namespace: str, name: str) -> None:
        """An EmbeddingProxy was deleted: drop its series."""
        key = (namespace, name)
        _remove(
            key,
            self.current_replicas,
            self.ready_replicas,
            self.desired_replicas,
            self.min_replicas,
            self.max_replicas,
            self.target_queue_depth,
            self.last_scale_time,
            self.pods_ready,
            self.pods_on_config,
            self.reconcile_errors,
        )
        state = self._states.pop(key, None)
        if state is not None:
            _remove((*key, state), self.autoscaling_state)
        for pod in self._pods.pop(key, set()):
            _remove((*key, pod), self.pod_queue_depth, self.pod_batch_fill)
            self._batches.pop((namespace, pod), None)

    def _fill(self, namespace: str, pod: str, now: BatchCounts | None) -> float | None:
        if now is None:
            return None
        before = self._batches.get((namespace, pod))
        self._batches[(namespace, pod)] = now
        return now.fill_since(before)

    # ---- serving ---------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


MAX_STATUS_PODS = 100  # status stays small however large the Deployment


def status_fields(listed: list[dict[str, Any]]) -> dict[str, Any]:
    """`status.pods` (the first MAX_STATUS_PODS by name) and the means over all pods that
    reported each figure; None (removed from status) where none did."""

    def mean(field: str) -> int | None:
        values = [p[field] for p in listed if field in p]
        return round(sum(values) / len(values)) if values else None

    return {
        "pods": listed[:MAX_STATUS_PODS],
        "queueDepth": mean("queueDepth"),
        "batchFillPercent": mean("batchFillPercent"),
    }


def pod_readings(
    ready: Sequence[Mapping[str, Any]],
    texts: Sequence[str | None],
    pages: Sequence[ProxyReading],
    applied: Collection[str],
) -> dict[str, PodReading]:
    """Per ready pod (by name), what its page said; `texts` and `pages` in the same order;
    `applied`, the pods that run the current config."""
    out: dict[str, PodReading] = {}
    for pod, text, page in zip(ready, texts, pages, strict=True):
        batch = batchfill.parse(text) if text is not None else None
        name = pod["metadata"]["name"]
        out[name] = PodReading(page.queue_depth_avg, batch, name in applied)
    return out


def _unix_time(stamp: Any) -> float | None:
    try:
        return (
            datetime.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
    except ValueError:
        return None


def _remove(labels: Iterable[str], *metrics: Gauge | Counter) -> None:
    for metric in metrics:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
