"""Pure: the target's ReplicaSet cannot create pods, as the Deployment controller reports it.

Pod validation and admission (a ResourceQuota, a LimitRange, PodSecurity, a policy or webhook)
judge each pod as the ReplicaSet creates it, long after the operator's patch of the Deployment
was accepted. A refused pod shows only as the Deployment's `ReplicaFailure` condition (reason
FailedCreate, the API server's refusal as its message) and the ReplicaSet's FailedCreate Events;
the pods never appear. The operator mirrors that condition on the EmbeddingProxy and stops
saying the sidecar is injected while new pods cannot be created."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..model import names
from .conditions import Fact

# The Deployment's condition type and the reason it gives when pods cannot be created.
DEPLOYMENT_CONDITION = "ReplicaFailure"
FAILED_CREATE = "FailedCreate"
# SidecarInjected's reason while the target's new pods cannot be created.
NOT_CREATED = "PodsNotCreated"
# A Normal Event when the failure clears.
CLEARED = "ReplicaFailureCleared"


def failure(deployment: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The Deployment's ReplicaFailure condition while it is True; None otherwise."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == DEPLOYMENT_CONDITION and cond.get("status") == "True":
            return cond
    return None


def fact(deployment: Mapping[str, Any] | None, target: str) -> Fact:
    """ReplicaFailure on the EmbeddingProxy: True, with the API server's reason, while the
    target's ReplicaSet cannot create (or delete) pods."""
    cond = failure(deployment)
    if deployment is None:
        message = f"Deployment {target!r} does not exist"
        return Fact(names.REPLICA_FAILURE, "False", "TargetNotFound", message)
    if cond is None:
        message = f"the ReplicaSets of Deployment {target!r} create and delete pods as asked"
        return Fact(names.REPLICA_FAILURE, "False", "NoFailure", message)
    reason = str(cond.get("reason") or FAILED_CREATE)
    what = {FAILED_CREATE: "create", "FailedDelete": "delete"}.get(reason, "create or delete")
    detail = str(cond.get("message") or "no message")
    message = f"the ReplicaSet of Deployment {target!r} cannot {what} pods: {detail}"
    return Fact(names.REPLICA_FAILURE, "True", reason, message)


def applied(facts: Sequence[Fact], deployment: Mapping[str, Any] | None, target: str) -> list[Fact]:
    """`facts` with the ReplicaFailure fact first, and SidecarInjected guarded."""
    return [fact(deployment, target)] + [
        guarded(f, deployment, target) for f in facts if f.type != names.REPLICA_FAILURE
    ]


def guarded(said: Fact, deployment: Mapping[str, Any] | None, target: str) -> Fact:
    """SidecarInjected True turned False while the target's new pods cannot be created: the
    sidecar is in the template (or the webhook's), but no new pod runs it. Any other fact as it
    is."""
    cond = failure(deployment)
    if said.type != names.SIDECAR_INJECTED or said.status != "True" or cond is None:
        return said
    if (cond.get("reason") or FAILED_CREATE) != FAILED_CREATE:
        return said  # pods are created; deleting them fails
    message = (
        f"new pods of Deployment {target!r} cannot be created, so none runs the sidecar: "
        f"{cond.get('message') or 'no message'}"
    )
    return Fact(names.SIDECAR_INJECTED, "False", NOT_CREATED, message)


def cleared(conditions: Sequence[Mapping[str, Any]], now: Fact) -> bool:
    """Whether the failure the EmbeddingProxy's status reported has just cleared."""
    before = next((c for c in conditions if c.get("type") == names.REPLICA_FAILURE), None)
    return before is not None and before.get("status") == "True" and now.status == "False"
