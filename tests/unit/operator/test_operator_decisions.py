"""Pure decisions: the plan for an EmbeddingProxy and its Deployment, conditions, pod reading."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from embedding_proxy.telemetry.metrics import Metrics
from embedding_proxy_operator.logic import pods, scaling_status
from embedding_proxy_operator.logic.conditions import Fact, merge, summarize
from embedding_proxy_operator.logic.plan import config_fact, plan
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.settings import Options, native_from_version, retry_delay

Obj = dict[str, Any]


def proxy(**spec: Any) -> Obj:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": {"targetRef": {"name": "tei"}, **spec},
    }


def deployment(containers: list[Obj] | None = None, **meta: Any) -> Obj:
    if containers is None:
        containers = [{"name": "tei", "ports": [{"containerPort": 80}]}]
    return {
        "metadata": {"name": "tei", "namespace": "ns", "resourceVersion": "1", **meta},
        "spec": {"template": {"spec": {"containers": containers}}},
    }


def fact(p: Any, type_: str) -> Fact:
    return next(f for f in p.facts if f.type == type_)


def test_plan_for_a_fresh_deployment_injects_native() -> None:
    p = plan(proxy(), deployment(), native_supported=True)
    assert p.ops and p.mode == "Native" and p.configmap is not None
    assert p.acts
    assert fact(p, names.TARGET_FOUND).status == "True"
    assert fact(p, names.SIDECAR_INJECTED).status == "True"
    assert p.warnings == []


def test_plan_without_target_writes_config_and_says_so() -> None:
    p = plan(proxy(), None, native_supported=True)
    assert p.configmap is not None and p.ops == []
    found = fact(p, names.TARGET_FOUND)
    assert (found.status, found.reason) == ("False", "TargetNotFound")
    assert "'tei' does not exist in namespace 'ns'" in found.message


def test_plan_falls_back_to_a_container_on_old_clusters_and_warns() -> None:
    p = plan(proxy(), deployment(), native_supported=False)
    assert p.mode == "Container"
    assert [w.reason for w in p.warnings] == ["NativeSidecarUnsupported"]


@pytest.mark.parametrize(
    ("dep", "spec", "reason"),
    [
        (deployment([{"name": "tei", "ports": [{"containerPort": 8000}]}]), {}, "PortConflict"),
        (deployment([{"name": "tei", "ports": [{"containerPort": 9464}]}]), {}, "PortConflict"),
        (deployment([]), {}, "TargetHasNoContainers"),
        (deployment(annotations={names.PROXY_ANNOTATION: "other"}), {}, "TargetClaimed"),
        (
            deployment([{"name": "tei"}, {"name": names.SIDECAR_NAME, "image": "mine"}]),
            {},
            "NameConflict",
        ),
        (deployment(), {"sidecar": {"ports": {"api": 1, "metrics": 1}}}, "InvalidSpec"),
    ],
)
def test_plan_refuses_and_explains(dep: Obj, spec: Obj, reason: str) -> None:
    p = plan(proxy(**spec), dep, native_supported=True)
    injected = fact(p, names.SIDECAR_INJECTED)
    assert (injected.status, injected.reason) == ("False", reason)
    assert p.ops == []
    assert reason in {w.reason for w in p.warnings}
    # A refused target is left alone, its scale too: the autoscaling condition says why.
    assert not p.acts
    autoscaling = scaling_status.refused_fact(p.facts)
    assert (autoscaling.type, autoscaling.status, autoscaling.reason) == (
        names.AUTOSCALING,
        "False",
        reason,
    )
    assert "scales nothing" in autoscaling.message


def test_plan_advises_on_a_short_own_pre_stop_hook_and_unknown_upstream_port() -> None:
    hook = {"preStop": {"exec": {"command": ["sleep", "3"]}}}
    dep = deployment([{"name": "tei", "ports": [{"containerPort": 3000}], "lifecycle": hook}])
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
    p = plan(proxy(), dep, native_supported=True)
    assert p.ops
    assert {w.reason for w in p.warnings} == {"PreStopKept", "UpstreamPortUnknown"}
    long_enough = {"preStop": {"sleep": {"seconds": 600}}}
    dep = deployment([{"name": "tei", "ports": [{"containerPort": 80}], "lifecycle": long_enough}])
    assert plan(proxy(), dep, native_supported=True).warnings == []


def test_plan_warns_when_the_drain_hook_cannot_reach_the_proxy() -> None:
    dep = deployment()
    dep["spec"]["template"]["spec"]["shareProcessNamespace"] = True
    assert [w.reason for w in plan(proxy(), dep, native_supported=True).warnings] == [
        "SharedProcessNamespace"
    ]
    regular = plan(proxy(sidecar={"mode": "Container"}), dep, native_supported=True)
    assert regular.warnings == []


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = merge([], [Fact("TargetFound", "True", "Found", "ok")], 1, "2024-01-01T00:00:00Z")
    again = merge(first, [Fact("TargetFound", "True", "Found", "ok")], 2, "2024-01-02T00:00:00Z")
    flipped = merge(again, [Fact("TargetFound", "False", "Gone", "x")], 3, "2024-01-03T00:00:00Z")
    by_type = {c["type"]: c for c in again}
    assert by_type["TargetFound"]["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert by_type["TargetFound"]["observedGeneration"] == 2
    flipped_by_type = {c["type"]: c for c in flipped}
    assert flipped_by_type["TargetFound"]["lastTransitionTime"] == "2024-01-03T00:00:00Z"
    assert flipped[0]["type"] == names.READY
    assert flipped_by_type[names.READY]["status"] == "False"
    assert flipped_by_type[names.READY]["reason"] == "Gone"


def test_ready_needs_everything_true() -> None:
    facts = [
        {"type": names.TARGET_FOUND, "status": "True"},
        {"type": names.SIDECAR_INJECTED, "status": "True"},
    ]
    assert summarize(facts).status == "Unknown"
    done = [*facts, {"type": names.CONFIG_APPLIED, "status": "True"}]
    assert summarize(done).status == "True"


def test_ready_is_false_for_an_invalid_spec_not_pending() -> None:
    # An invalid spec never gets as far as TargetFound; Ready says why, not "not known yet".
    proxy = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"targetRef": {}}}
    conditions = merge([], plan(proxy, None, True).facts, 1, "2024-01-01T00:00:00Z")
    ready = conditions[0]
    assert ready["type"] == names.READY
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")


def test_api_error_messages_are_cut_short() -> None:
    import json

    from embedding_proxy_operator.io import kube

    status = {"reason": "Invalid", "message": "x" * 5000 + "managedFields"}
    e = kube._error(422, "Unprocessable", None, json.dumps(status))
    assert len(e.message) == kube.MAX_MESSAGE and e.message.endswith("…")
    assert "managedFields" not in str(e)


@pytest.mark.parametrize(
    ("ready", "current", "status", "reason"),
    [(0, 0, "Unknown", "NoReadyPods"), (3, 1, "False", "Rolling"), (3, 3, "True", "Applied")],
)
def test_config_fact(ready: int, current: int, status: str, reason: str) -> None:
    f = config_fact(ready, current, "abc")
    assert (f.status, f.reason) == (status, reason)


def pod(name: str, ip: str | None = "10.0.0.1", ready: bool = True, **labels: str) -> Obj:
    return {
        "metadata": {"name": name, "labels": labels or {"app": "tei"}},
        "spec": {"initContainers": [{"name": names.SIDECAR_NAME}], "containers": [{"name": "t"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_proxy_pods_are_the_ready_matching_ones_with_an_ip() -> None:
    selector = {
        "matchLabels": {"app": "tei"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}],
    }
    listing = [
        pod("b"),
        pod("a"),
        pod("unready", ready=False),
        pod("no-ip", ip=None),
        pod("other", app="web"),
        pod("canary", app="tei", tier="canary"),
    ]
    assert [p["metadata"]["name"] for p in pods.proxy_pods(listing, selector)] == ["a", "b"]
    assert pods.matches({}, {"app": "tei"}) is False
    assert pods.selector_query(selector) == "app=tei"
    assert pods.metrics_url(pod("a", ip="fd00::1"), 9464) == "http://[fd00::1]:9464/metrics"


def test_config_versions_are_read_from_the_proxys_own_metrics() -> None:
    metrics = Metrics()
    metrics.set_config_version("abc123")
    text = generate_latest(metrics.registry).decode()
    assert pods.config_versions([text, None, "not metrics {"]) == ["abc123", None, None]


def test_options_from_env_and_version_rules() -> None:
    o = Options.from_env({"EMBEDDING_PROXY_OPERATOR_STATUS_SECONDS": "2"})
    assert o.status_seconds == 2 and o.native_sidecars == "auto"
    with pytest.raises(ValueError, match="NATIVE_SIDECARS"):
        Options.from_env({"EMBEDDING_PROXY_OPERATOR_NATIVE_SIDECARS": "maybe"})
    assert native_from_version("1", "29+") and not native_from_version("1", "28")
    assert [retry_delay(r, 10) for r in range(6)] == [1, 2, 4, 8, 10, 10]
