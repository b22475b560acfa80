"""What the observe daemon reads, served from kopf's watches instead of the API server: the
Deployments by name, the pods, HPAs and KEDA ScaledObjects by namespace, and the EmbeddingProxies
that would scale each Deployment (kopf indexes, kept current by its watch streams).
An idle EmbeddingProxy so costs no request at all between changes: its own body is the daemon's
live view, and status is written only when it changes (`observe`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf

from ..logic import scaling_status
from ..logic.pods import cached
from ..model import names
from ..model.spec import SpecError, parse

Obj = dict[str, Any]


@kopf.index("apps", "v1", "deployments")
def deployments_by_name(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Obj]:
    return {(namespace, name): cached(body)}


@kopf.index("", "v1", "pods")
def pods_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Obj]:
    return {namespace: cached(body)}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def hpas_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Obj]:
    return {namespace: cached(body)}


# Empty where KEDA is not installed (kopf watches only what the API server serves). Kept with
# their managedFields (there are few): a repair names who changed ours (`observe`).
@kopf.index("keda.sh", "v1alpha1", "scaledobjects")
def scaled_objects_by_namespace(namespace: str, body: kopf.Body, **_: Any) -> dict[str, Obj]:
    return {namespace: dict(body)}


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def scalers_by_target(
    namespace: str, name: str, meta: kopf.Meta, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], tuple[str, str]] | None:
    """The EmbeddingProxies that would scale each Deployment (at most one may: the oldest)."""
    try:
        parsed = parse(dict(spec))
    except SpecError:
        return None
    created = str(meta.get("creationTimestamp") or "")
    return scaling_status.scaler_key(namespace, name, created, parsed)


@dataclass
class Cached:
    """One EmbeddingProxy's view of the cluster: its live body, and the indexes."""

    body: kopf.Body
    deployments: kopf.Index[tuple[str, str], Obj]
    pods_by_namespace: kopf.Index[str, Obj]
    hpas_by_namespace: kopf.Index[str, Obj]
    scaled_objects_by_namespace: kopf.Index[str, Obj]
    scalers: kopf.Index[tuple[str, str], tuple[str, str]]

    def proxy(self) -> Obj:
        return dict(self.body)

    def deployment(self, namespace: str, name: str) -> Obj | None:
        for value in self.deployments.get((namespace, name), []):
            return dict(value)
        return None

    def pods(self, namespace: str) -> list[Obj]:
        return [dict(p) for p in self.pods_by_namespace.get(namespace, [])]

    def hpas(self, namespace: str) -> list[Obj]:
        return [dict(h) for h in self.hpas_by_namespace.get(namespace, [])]

    def scaled_objects(self, namespace: str) -> list[Obj]:
        return [dict(o) for o in self.scaled_objects_by_namespace.get(namespace, [])]

    def scaled_object(self, namespace: str, name: str) -> Obj | None:
        return next(
            (o for o in self.scaled_objects(namespace) if o["metadata"].get("name") == name), None
        )

    def scalers_of(self, namespace: str, deployment: str) -> list[tuple[str, str]]:
        """(creation time, name) of each EmbeddingProxy that would scale `deployment`."""
        return list(self.scalers.get((namespace, deployment), []))
