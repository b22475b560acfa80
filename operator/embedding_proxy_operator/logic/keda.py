"""Pure rendering of the KEDA ScaledObject written for `spec.autoscaling.provider: KEDA`.

It scales on the same signal, target and behavior as the built-in autoscaler: a Prometheus
trigger on the sum of the proxies' `embedding_proxy_queue_depth_avg` (of the pods whose TEI is
up) with an AverageValue
target, so KEDA's HPA computes `ceil(sum / targetQueueDepthPerPod)` (see
manifests/examples/keda-scaledobject.yaml, which this reproduces)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import names
from ..model.spec import ProxySpec
from .hpa_policy import ScalingRules, policy_of
from .render import owned_metadata
from .scrape import QUEUE_DEPTH_AVG, UPSTREAM_UP

Obj = dict[str, Any]

API_VERSION = "keda.sh/v1alpha1"
KIND = "ScaledObject"


def pod_pattern(deployment: str) -> str:
    """A regular expression for the pod names of a Deployment:
    `<deployment>-<pod-template-hash>-<5 characters>`, so that the pods of another Deployment
    whose name merely starts with `<deployment>-` do not match. Names hold only [a-z0-9.-];
    the dot is the one character special in a regular expression."""
    return f"{deployment.replace('.', '[.]')}-[a-z0-9]+-[a-z0-9]{{5}}"


def query(namespace: str, deployment: str) -> str:
    """The PromQL that sums the proxies' queue depth over the pods of `deployment`, leaving out
    the pods whose proxy finds its TEI down (`embedding_proxy_upstream_up` 0), as the built-in
    autoscaler does (`scrape.ProxyReading.load`): a hung TEI fills its proxy's queue, which more
    replicas would not drain. A pod that exports no `upstream_up` still counts. A sum, not an
    average: the trigger's AverageValue divides by the replica count already."""
    pods = f'{{namespace="{namespace}", pod=~"{pod_pattern(deployment)}"}}'
    down = f"({UPSTREAM_UP}{pods} == 0)"
    return f"sum({QUEUE_DEPTH_AVG}{pods} unless on(namespace, pod) {down})"


def _rules(rules: ScalingRules) -> Obj:
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_seconds,
        "selectPolicy": rules.select_policy,
        "policies": [
            {"type": p.type, "value": p.value, "periodSeconds": p.period_seconds}
            for p in rules.policies
        ],
    }


def scaled_object(name: str, namespace: str, uid: str | None, spec: ProxySpec) -> Obj:
    """The ScaledObject for the EmbeddingProxy `name`; owned by it (when its uid is known) so
    that garbage collection removes it with the EmbeddingProxy."""
    policy = policy_of(spec)
    meta = owned_metadata(names.scaled_object_name(name), name, namespace, uid)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": spec.scale_target_name,
            },
            "pollingInterval": spec.autoscaling.poll_seconds,
            # Not KEDA's default of 0 when the proxies live in the scaled pods: at 0 replicas
            # there would be no signal left to scale back up on (the built-in autoscaler's floor).
            "minReplicaCount": policy.floor,
            "maxReplicaCount": policy.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": _rules(policy.scale_up),
                        "scaleDown": _rules(policy.scale_down),
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": spec.autoscaling.keda.server_address,
                        "query": query(namespace, spec.target_ref.name),
                        "threshold": str(policy.target_queue_depth_per_pod),
                        # No answer (Prometheus lost the targets) is an error, not a load of 0:
                        # KEDA then keeps the replicas rather than scaling down to the minimum.
                        "ignoreNullValues": "false",
                    },
                }
            ],
        },
    }


def owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether `obj` names the EmbeddingProxy with this uid among its owners."""
    return bool(uid) and any(
        ref.get("uid") == uid and ref.get("kind") == names.KIND
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )
