"""Pure: Webhook mode. Which Deployment a new pod comes from, the JSON Patch that injects it (the
very rendering and patching Deployment mode applies to the pod template, applied to the pod), the
MutatingWebhookConfiguration's webhooks, and which pods escaped the webhook."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..model import names
from . import patches, pods
from .plan import Plan, plan

Obj = dict[str, Any]
Op = dict[str, Any]

# The webhook's handlers (kopf routes a request by the last part of its path to the handler of
# that id) and the names of the webhooks in the configuration.
POD_HANDLER = "pods"
PROBE_HANDLER = "probe"
POD_WEBHOOK = f"pods.{names.GROUP}"
PROBE_WEBHOOK = f"probe.{names.GROUP}"
# A ConfigMap with this label, created with dryRun, is the operator's probe of the webhook: the
# webhook marks it with the annotation, so the answer shows that the API server reaches it.
PROBE_LABEL = f"{names.GROUP}/webhook-probe"
PROBE_ANNOTATION = f"{names.GROUP}/webhook-reached"
# The API server waits this long for the webhook, then follows the failure policy: a short
# wait, since every pod creation in the selected namespaces waits with it.
TIMEOUT_SECONDS = 5
# Namespaces the webhook never sees (besides the operator's own).
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# Only pods a ReplicaSet creates are sent to the webhook: the API server checks this itself.
OWNED_BY_REPLICASET = (
    "has(object.metadata.ownerReferences) && "
    "object.metadata.ownerReferences.exists(r, r.kind == 'ReplicaSet' && r.apiVersion == 'apps/v1')"
)


def deployment_of(pod: Mapping[str, Any]) -> str | None:
    """The Deployment a pod was made for: its controlling ReplicaSet is named after the
    Deployment and the pod's `pod-template-hash` label (the Deployment controller's naming)."""
    meta = pod.get("metadata") or {}
    hash_ = (meta.get("labels") or {}).get("pod-template-hash")
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller") and hash_:
            rs = str(ref.get("name") or "")
            suffix = f"-{hash_}"
            if rs.endswith(suffix) and len(rs) > len(suffix):
                return rs[: -len(suffix)]
    return None


def pod_plan(
    proxy: Mapping[str, Any],
    pod: Mapping[str, Any],
    native: bool,
    sleep_action: bool,
    allowed_images: tuple[str, ...],
) -> tuple[Plan, list[Op]]:
    """The plan for a pod (its facts say why nothing is injected, if so), and the JSON Patch
    that puts the sidecar into it: Deployment mode's patch of a template holding this pod's
    spec, moved to the pod's own paths. The pod's metadata is left as it is (its restart
    annotation comes from the template)."""
    template = {
        "metadata": {},
        "spec": {
            "template": {
                "metadata": copy.deepcopy(pod.get("metadata") or {}),
                "spec": copy.deepcopy(pod.get("spec") or {}),
            }
        },
    }
    proxy = {**proxy, "spec": {**(proxy.get("spec") or {}), "injection": "Deployment"}}
    result = plan(proxy, template, native, sleep_action, allowed_images)
    ops: list[Op] = []
    for op in result.ops:
        path = str(op.get("path", ""))
        if path.startswith(patches.POD + "/") or path == patches.POD:
            ops.append({**op, "path": "/spec" + path[len(patches.POD) :]})
    return result, ops


def client_config(url: str, service: str, port: int, ca_bundle: str, handler: str) -> Obj:
    """How the API server reaches one handler: the operator's Service (`name.namespace`, port
    443), or a URL where there is none."""
    if url:
        return {"url": f"{url.rstrip('/')}/{handler}", "caBundle": ca_bundle}
    name, _, namespace = service.partition(".")
    ref = {"namespace": namespace, "name": name, "port": port, "path": f"/{handler}"}
    return {"service": ref, "caBundle": ca_bundle}


def namespace_selector(
    watched: Sequence[str], own: str, labels: Sequence[tuple[str, str]] = ()
) -> Obj:
    """The watched namespaces, or every namespace; never the system's nor the operator's own (so
    that the operator's pods never wait for the operator, even when its namespace is watched);
    and of those only the ones with `labels`, if any are given."""
    key = "kubernetes.io/metadata.name"
    out: Obj = {"matchLabels": dict(labels)} if labels else {}
    excluded = sorted({*SYSTEM_NAMESPACES, *([own] if own else [])})
    out["matchExpressions"] = [{"key": key, "operator": "NotIn", "values": excluded}]
    if watched:
        out["matchExpressions"].append({"key": key, "operator": "In", "values": sorted(watched)})
    return out


def webhooks(
    url: str,
    service: str,
    ca_bundle: str,
    failure_policy: str,
    watched: Sequence[str],
    own_namespace: str,
    labels: Sequence[tuple[str, str]] = (),
) -> list[Obj]:
    """The MutatingWebhookConfiguration's webhooks: new pods of ReplicaSets in the watched
    namespaces (with `labels`), and the probe."""
    selector = namespace_selector(watched, own_namespace, labels)
    common: Obj = {
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "Never",
        "namespaceSelector": selector,
    }
    return [
        {
            "name": POD_WEBHOOK,
            "clientConfig": client_config(url, service, 443, ca_bundle, POD_HANDLER),
            "rules": [_rule("pods")],
            "failurePolicy": failure_policy,
            "objectSelector": {},
            "matchConditions": [
                {"name": "owned-by-a-replicaset", "expression": OWNED_BY_REPLICASET}
            ],
            **common,
        },
        {
            "name": PROBE_WEBHOOK,
            "clientConfig": client_config(url, service, 443, ca_bundle, PROBE_HANDLER),
            "rules": [_rule("configmaps")],
            # The probe finds out whether the webhook is reached: it must never block anything.
            "failurePolicy": "Ignore",
            "objectSelector": {"matchLabels": {PROBE_LABEL: "true"}},
            **common,
        },
    ]


def _rule(resource: str) -> Obj:
    return {
        "apiGroups": [""],
        "apiVersions": ["v1"],
        "resources": [resource],
        "operations": ["CREATE"],
        "scope": "Namespaced",
    }


def probe_configmap(namespace: str) -> Obj:
    """The ConfigMap the operator creates with dryRun=All to see whether the webhook answers."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "generateName": "embedding-proxy-webhook-probe-",
            "namespace": namespace,
            "labels": {PROBE_LABEL: "true"},
        },
    }


def probe_reached(answer: Mapping[str, Any]) -> bool:
    annotations = (answer.get("metadata") or {}).get("annotations") or {}
    return annotations.get(PROBE_ANNOTATION) == "true"


def webhook_injects(result: Plan) -> bool:
    """Whether the webhook puts the sidecar into the target's new pods: Webhook mode, and the
    plan has a sidecar to put in. Where the plan refuses (a port or name conflict, a target
    claimed, an image not allowed, ...), no pod of the target has "escaped" it: re-creating one
    would bring back the same pod."""
    return result.injection == "Webhook" and result.container is not None


def may_delete_ready(live: int, replicas: int, injected: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an escaped pod that is ready may be deleted now: only while no replica is missing
    (a pod deleted before has been replaced) and every pod with the sidecar is ready, so that
    capacity drops by at most one pod."""
    return live >= replicas and all(pods.is_ready(p) for p in injected)


def escaped(items: Iterable[Mapping[str, Any]], selector: Mapping[str, Any]) -> list[Obj]:
    """The Deployment's live pods without the sidecar (made while the webhook was not reached),
    by name."""
    return [p for p in pods.live_pods(items, selector) if not pods.runs_sidecar(p)]


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with controller=true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def controlled_by(obj: Mapping[str, Any], kind: str, uid: str | None) -> bool:
    """Whether `obj`'s controller is the apps/v1 `kind` with this uid."""
    ref = controller_of(obj)
    return bool(
        ref
        and uid
        and ref.get("apiVersion") == "apps/v1"
        and ref.get("kind") == kind
        and ref.get("uid") == uid
    )
