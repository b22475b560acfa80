"""Pods the API server refuses to create: the Deployment's ReplicaFailure condition, mirrored on
the EmbeddingProxy, and SidecarInjected no longer True while no new pod can run the sidecar."""

from __future__ import annotations

from typing import Any

import pytest

from embedding_proxy_operator.logic import replica_failure
from embedding_proxy_operator.logic.conditions import Fact, merge
from embedding_proxy_operator.logic.plan import plan
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
REFUSAL = (
    'pods "tei-7d4b9c-x2k4q" is forbidden: maximum cpu usage per Container is 1, but limit is 2'
)


def deployment(*conditions: Obj) -> Obj:
    return {
        "metadata": {"name": "tei", "namespace": "ns"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "template": {"spec": {"containers": [{"name": "tei", "image": "tei"}]}},
        },
        "status": {"conditions": list(conditions)},
    }


def failed(reason: str = "FailedCreate", status: str = "True") -> Obj:
    return {"type": "ReplicaFailure", "status": status, "reason": reason, "message": REFUSAL}


PROGRESSING = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
PROXY = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"targetRef": {"name": "tei"}}}


def by_type(facts: list[Fact]) -> dict[str, Fact]:
    return {f.type: f for f in facts}


@pytest.mark.parametrize("mode", ["Deployment", "Webhook"])
def test_a_refused_pod_makes_ready_false_with_the_api_servers_reason(mode: str) -> None:
    proxy = {**PROXY, "spec": {**PROXY["spec"], "injection": mode}}
    result = plan(proxy, deployment(PROGRESSING, failed()), True)
    facts = by_type(result.facts)
    mirrored = facts[names.REPLICA_FAILURE]
    assert (mirrored.status, mirrored.reason) == ("True", "FailedCreate")
    assert REFUSAL in mirrored.message and "'tei'" in mirrored.message
    injected = facts[names.SIDECAR_INJECTED]
    assert (injected.status, injected.reason) == ("False", replica_failure.NOT_CREATED)
    assert REFUSAL in injected.message
    # What `kubectl get eproxy -o wide` shows: Ready False, and why.
    ready = merge([], result.facts, 1, "t")[0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        names.READY,
        "False",
        replica_failure.NOT_CREATED,
    )
    assert [w.message for w in result.warnings if w.reason == names.REPLICA_FAILURE] == [
        mirrored.message
    ]


@pytest.mark.parametrize("conditions", [(), (PROGRESSING,), (failed(status="False"),)])
def test_without_a_failure_the_sidecar_is_injected(conditions: tuple[Obj, ...]) -> None:
    result = plan(PROXY, deployment(*conditions), True)
    facts = by_type(result.facts)
    assert (facts[names.REPLICA_FAILURE].status, facts[names.REPLICA_FAILURE].reason) == (
        "False",
        "NoFailure",
    )
    assert facts[names.SIDECAR_INJECTED].status == "True"
    assert not [w for w in result.warnings if w.reason == names.REPLICA_FAILURE]


def test_a_failed_delete_is_reported_but_pods_still_get_the_sidecar() -> None:
    result = plan(PROXY, deployment(failed("FailedDelete")), True)
    facts = by_type(result.facts)
    assert facts[names.REPLICA_FAILURE].status == "True"
    assert "cannot delete pods" in facts[names.REPLICA_FAILURE].message
    assert facts[names.SIDECAR_INJECTED].status == "True"


def test_a_refusal_of_the_operators_own_is_kept() -> None:
    # The Deployment is another EmbeddingProxy's: that reason stands, the failure is still said.
    taken = deployment(failed())
    taken["metadata"]["annotations"] = {names.PROXY_ANNOTATION: "other"}
    facts = by_type(plan(PROXY, taken, True).facts)
    assert facts[names.SIDECAR_INJECTED].reason == "TargetClaimed"
    assert facts[names.REPLICA_FAILURE].status == "True"


def test_a_missing_target_clears_a_failure_it_had() -> None:
    facts = by_type(plan(PROXY, None, True).facts)
    assert (facts[names.REPLICA_FAILURE].status, facts[names.REPLICA_FAILURE].reason) == (
        "False",
        "TargetNotFound",
    )


def test_an_invalid_spec_says_nothing_of_replicas() -> None:
    bad = {**PROXY, "spec": {"targetRef": {"name": "tei"}, "sidecar": {"image": "x "}}}
    result = plan(bad, deployment(failed()), True)
    assert names.REPLICA_FAILURE not in by_type(result.facts)


def test_other_facts_pass_through_guarded() -> None:
    webhook = Fact(names.SIDECAR_INJECTED, "True", "Webhook", "every pod runs the sidecar")
    escaped = Fact(names.SIDECAR_INJECTED, "False", "PodsWithoutSidecar", "2 pods")
    other = Fact(names.CONFIG_APPLIED, "True", "Applied", "all")
    dep = deployment(failed())
    assert replica_failure.guarded(webhook, dep, "tei").reason == replica_failure.NOT_CREATED
    assert replica_failure.guarded(escaped, dep, "tei") == escaped
    assert replica_failure.guarded(other, dep, "tei") == other
    assert replica_failure.guarded(webhook, deployment(), "tei") == webhook


def test_cleared_only_on_the_way_from_true_to_false() -> None:
    true = {"type": names.REPLICA_FAILURE, "status": "True"}
    false = {"type": names.REPLICA_FAILURE, "status": "False"}
    now_false = replica_failure.fact(deployment(), "tei")
    now_true = replica_failure.fact(deployment(failed()), "tei")
    assert replica_failure.cleared([true], now_false)
    assert not replica_failure.cleared([false], now_false)
    assert not replica_failure.cleared([], now_false)
    assert not replica_failure.cleared([true], now_true)
