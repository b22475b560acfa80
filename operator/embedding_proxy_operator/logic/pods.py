"""Pure reading of pods: which belong to a Deployment, which are ready and run the sidecar, and
where their proxy's metrics are. Selection is done here as well as by the API server's label
selector, so that the result is right whatever the server filtered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ..model import names

Obj = dict[str, Any]


def selector_query(selector: Mapping[str, Any]) -> str:
    """The labelSelector query parameter for a Deployment's matchLabels (expressions are
    checked locally by `matches`)."""
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def containers(pod: Mapping[str, Any]) -> list[Obj]:
    """The pod's init containers and containers."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def looks_ours(container: Mapping[str, Any]) -> bool:
    """A sidecar the operator rendered: it mounts the operator's config volume."""
    return any(m.get("name") == names.CONFIG_VOLUME for m in container.get("volumeMounts") or [])


def runs_sidecar_of(pod: Mapping[str, Any], proxy_name: str) -> bool:
    """Whether the pod runs the sidecar of the EmbeddingProxy `proxy_name`: one the operator
    rendered, whose config volume is that EmbeddingProxy's ConfigMap (another one's sidecar,
    or a user's own container of that name, is not)."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    config = next((v for v in volumes if v.get("name") == names.CONFIG_VOLUME), {})
    mine = (config.get("configMap") or {}).get("name") == names.configmap_name(proxy_name)
    return mine and any(
        c.get("name") == names.SIDECAR_NAME and looks_ours(c) for c in containers(pod)
    )


def runs_sidecar(pod: Mapping[str, Any]) -> bool:
    return any(c.get("name") == names.SIDECAR_NAME for c in containers(pod))


def proxy_pods(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, Any]) -> list[Obj]:
    """The Deployment's ready pods that run the sidecar and have an IP, by name."""
    out = [
        dict(p)
        for p in pods
        if matches(selector, p.get("metadata", {}).get("labels") or {})
        and is_ready(p)
        and runs_sidecar(p)
        and (p.get("status") or {}).get("podIP")
    ]
    return sorted(out, key=lambda p: p["metadata"].get("name", ""))


def live_pods(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, Any]) -> list[Obj]:
    """The Deployment's pods that count as replicas: not terminating, not finished (HPA's view).
    Ready or not: an unready pod is a replica without a value for the autoscaler."""
    out = [
        dict(p)
        for p in pods
        if matches(selector, p.get("metadata", {}).get("labels") or {})
        and not p.get("metadata", {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    return sorted(out, key=lambda p: p["metadata"].get("name", ""))


def metrics_url(pod: Mapping[str, Any], port: int) -> str:
    ip = pod["status"]["podIP"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics"


def config_versions(texts: Sequence[str | None]) -> list[str | None]:
    """The config version each proxy reports (`embedding_proxy_config_info{version=...} 1`)."""
    return [_config_version(t) if t is not None else None for t in texts]


def _config_version(text: str) -> str | None:
    try:
        for family in text_string_to_metric_families(text):
            if family.name == "embedding_proxy_config_info":
                for sample in family.samples:
                    if sample.value == 1 and "version" in sample.labels:
                        return sample.labels["version"]
    except ValueError:
        return None
    return None


def cached(obj: Mapping[str, Any]) -> Obj:
    """An object as kept in the operator's caches: all but its managedFields, which nothing
    reads and which can be most of its size."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**dict(obj), "metadata": meta}
