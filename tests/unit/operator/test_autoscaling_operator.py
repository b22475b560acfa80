"""The pure parts of the operator's autoscaling around the algorithm: the KEDA ScaledObject it
writes, which pods count, which other autoscaler makes it stand back, the history kept in status,
and the condition, Event and status it writes after a decision."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tests.helpers.external_schemas import SCALED_OBJECT

from embedding_proxy_operator.logic import keda, pods, scaling_status
from embedding_proxy_operator.logic.hpa import History, Recommendation, ScaleEvent, decide
from embedding_proxy_operator.logic.hpa_policy import DEFAULT_SCALE_DOWN, Policy, ScalingRules
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import DEFAULT_PROMETHEUS, SpecError, parse

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "manifests" / "examples" / "keda-scaledobject.yaml"
T0 = 1_700_000_000.0

Obj = dict[str, Any]


def closed(node: Any) -> Any:
    """The schema with unknown fields refused, so a misspelt field fails the test."""
    node = copy.deepcopy(node)
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
            node["properties"] = {k: closed(v) for k, v in node["properties"].items()}
        if isinstance(node.get("items"), dict):
            node["items"] = closed(node["items"])
    return node


def spec(**autoscaling: Any) -> Any:
    return parse(
        {
            "targetRef": {"name": "tei"},
            "autoscaling": {"enabled": True, "provider": "KEDA", **autoscaling},
        }
    )


def crd_status_schema() -> Obj:
    crd = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]


# ---- the ScaledObject ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "autoscaling",
    [
        {},
        {"minReplicas": 0, "maxReplicas": 3, "targetQueueDepthPerPod": 16, "pollSeconds": 2},
        {"scaleTargetRef": {"name": "gpu"}, "minReplicas": 0},
        {
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 30, "selectPolicy": "Min"},
                "scaleDown": {
                    "stabilizationWindowSeconds": 60,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
                },
            },
            "keda": {"serverAddress": "https://prom.example:9091"},
        },
    ],
)
def test_the_scaled_object_is_valid_for_keda(autoscaling: Obj) -> None:
    obj = keda.scaled_object("tei", "gpu-ns", "uid-1", spec(**autoscaling))
    jsonschema.validate(obj, closed(SCALED_OBJECT))
    assert (obj["apiVersion"], obj["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")


def test_the_scaled_object_is_the_documented_example() -> None:
    """With the defaults, what the operator writes scales exactly as the example does."""
    example = yaml.safe_load(EXAMPLE.read_text())
    obj = keda.scaled_object("tei", "default", "uid-1", spec())
    ours, theirs = obj["spec"], example["spec"]
    assert ours["scaleTargetRef"] == theirs["scaleTargetRef"]
    assert ours["minReplicaCount"] == theirs["minReplicaCount"] == 1
    assert ours["maxReplicaCount"] == theirs["maxReplicaCount"]
    assert ours["advanced"] == theirs["advanced"]
    (trigger,), (expected,) = ours["triggers"], theirs["triggers"]
    assert trigger["type"] == expected["type"] == "prometheus"
    assert trigger["metricType"] == expected["metricType"] == "AverageValue"

    def squeeze(query: str) -> str:
        return re.sub(r"\s+", "", query)

    meta, expected_meta = trigger["metadata"], expected["metadata"]
    assert squeeze(meta.pop("query")) == squeeze(expected_meta.pop("query"))
    assert meta == expected_meta
    assert meta["serverAddress"] == DEFAULT_PROMETHEUS
    # KEDA asks as often as the built-in autoscaler would poll.
    assert ours["pollingInterval"] == 5


def test_the_scaled_object_is_owned_and_labelled() -> None:
    obj = keda.scaled_object("tei", "ns", "uid-1", spec())
    meta = obj["metadata"]
    assert meta["name"] == names.scaled_object_name("tei") and meta["namespace"] == "ns"
    assert meta["labels"][names.LABEL_PROXY] == "tei"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": "tei",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": False,
    }
    assert keda.owned_by(obj, "uid-1")
    assert not keda.owned_by(obj, "uid-2")
    assert not keda.owned_by({"metadata": {}}, "uid-1")


def test_the_scaled_object_follows_the_spec() -> None:
    obj = keda.scaled_object(
        "p",
        "ns",
        "u",
        spec(
            minReplicas=2,
            maxReplicas=7,
            targetQueueDepthPerPod=40,
            pollSeconds=3,
            behavior={"scaleDown": {"stabilizationWindowSeconds": 30}},
            keda={"serverAddress": "http://prom:9090"},
        ),
    )
    s = obj["spec"]
    assert (s["minReplicaCount"], s["maxReplicaCount"], s["pollingInterval"]) == (2, 7, 3)
    (trigger,) = s["triggers"]
    assert trigger["metadata"]["threshold"] == "40"
    assert trigger["metadata"]["serverAddress"] == "http://prom:9090"
    assert trigger["metadata"]["ignoreNullValues"] == "false"
    behavior = s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # A direction written in part takes the rest from HPA's defaults, as the built-in one does.
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert len(behavior["scaleUp"]["policies"]) == 2


def test_zero_replicas_only_when_the_signal_survives_them() -> None:
    # Proxies in the scaled pods: at 0 there is nothing left to measure, so at least 1.
    beside_tei = keda.scaled_object("p", "ns", "u", spec(minReplicas=0))
    assert beside_tei["spec"]["minReplicaCount"] == 1
    # Proxies beside clients scaling TEI elsewhere: the sum survives TEI at 0.
    beside_clients = keda.scaled_object(
        "p", "ns", "u", spec(minReplicas=0, scaleTargetRef={"name": "gpu"})
    )
    assert beside_clients["spec"]["minReplicaCount"] == 0
    assert beside_clients["spec"]["scaleTargetRef"]["name"] == "gpu"
    # The query still reads the proxies, i.e. the pods of targetRef.
    (trigger,) = beside_clients["spec"]["triggers"]
    assert 'pod=~"tei-' in trigger["metadata"]["query"]


@pytest.mark.parametrize(
    ("deployment", "pod", "matches"),
    [
        ("tei", "tei-5d8f7c9b4-x2x7q", True),
        ("tei", "tei-canary-5d8f7c9b4-x2x7q", False),  # another Deployment's pods
        ("tei", "tei-5d8f7c9b4", False),
        ("tei", "xtei-5d8f7c9b4-x2x7q", False),
        ("tei.v2", "tei.v2-6b7c8d9f-abcde", True),
        ("tei.v2", "teixv2-6b7c8d9f-abcde", False),  # the dot is literal
    ],
)
def test_the_query_selects_the_deployments_pods(deployment: str, pod: str, matches: bool) -> None:
    # Prometheus anchors label regular expressions at both ends.
    assert bool(re.fullmatch(keda.pod_pattern(deployment), pod)) is matches


def test_the_query_sums_the_gauge_in_the_namespace_but_of_pods_whose_tei_is_down() -> None:
    pods = '{namespace="gpu", pod=~"tei-[a-z0-9]+-[a-z0-9]{5}"}'
    assert keda.query("gpu", "tei") == (
        f"sum(embedding_proxy_queue_depth_avg{pods} unless on(namespace, pod) "
        f"(embedding_proxy_upstream_up{pods} == 0))"
    )


def test_the_prometheus_address_is_checked() -> None:
    with pytest.raises(SpecError, match="serverAddress"):
        spec(keda={"serverAddress": "prometheus:9090"})
    with pytest.raises(SpecError, match="unknown field"):
        spec(keda={"address": "http://prometheus:9090"})


# ---- which pods count ------------------------------------------------------------------------


def pod(name: str, ready: bool = True, phase: str = "Running", deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "labels": {"app": "tei"}}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"initContainers": [{"name": names.SIDECAR_NAME}], "containers": [{"name": "t"}]},
        "status": {
            "phase": phase,
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SELECTOR = {"matchLabels": {"app": "tei"}}


def test_live_pods_are_the_replicas_ready_or_not() -> None:
    items = [
        pod("a"),
        pod("b", ready=False),
        pod("c", deleting=True),
        pod("d", phase="Failed"),
        pod("e", phase="Succeeded"),
        pod("f", phase="Pending", ready=False),
        {**pod("g"), "metadata": {"name": "g", "labels": {"app": "web"}}},
    ]
    assert [p["metadata"]["name"] for p in pods.live_pods(items, SELECTOR)] == ["a", "b", "f"]
    assert [p["metadata"]["name"] for p in pods.proxy_pods(items, SELECTOR)] == ["a"]


def test_samples_in_the_scaled_pods_count_every_live_pod() -> None:
    live = [pod("a"), pod("b", ready=False), pod("c")]
    readings = {"a": 10.0, "c": None}
    assert scaling_status.samples(live, readings, True) == {"a": 10.0, "b": None, "c": None}


def test_samples_beside_clients_are_the_reporting_proxies() -> None:
    readings = {"a": 10.0, "c": None}
    assert scaling_status.samples([pod("a"), pod("b")], readings, False) == readings


# ---- another autoscaler ----------------------------------------------------------------------


def hpa(name: str, target: str = "tei", owner: str | None = None, kind: str = "Deployment") -> Obj:
    meta: Obj = {"name": name}
    if owner:
        meta["ownerReferences"] = [{"kind": "ScaledObject", "name": owner, "uid": "so"}]
    return {
        "metadata": meta,
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}},
    }


def scaled(name: str, target: str = "tei", owner_uid: str | None = None) -> Obj:
    meta: Obj = {"name": name}
    if owner_uid:
        meta["ownerReferences"] = [{"kind": names.KIND, "name": "p", "uid": owner_uid}]
    return {"metadata": meta, "spec": {"scaleTargetRef": {"name": target}}}


OURS = names.scaled_object_name("p")


@pytest.mark.parametrize(
    ("hpas", "scaled_objects", "expected"),
    [
        ([], [], None),
        ([hpa("web", target="web")], [], None),
        ([hpa("tei-hpa")], [], ("HorizontalPodAutoscaler", "tei-hpa")),
        # Same name, another kind of target: not ours to worry about.
        ([hpa("ss", kind="StatefulSet")], [], None),
        # Ours, and the HPA KEDA made for it (even once ours is gone).
        ([hpa(f"keda-hpa-{OURS}", owner=OURS)], [scaled(OURS, owner_uid="uid")], None),
        ([hpa(f"keda-hpa-{OURS}", owner=OURS)], [], None),
        # Someone else's ScaledObject is named rather than the HPA it made.
        (
            [hpa("keda-hpa-theirs", owner="theirs")],
            [scaled("theirs")],
            ("ScaledObject", "theirs"),
        ),
        # A ScaledObject with our name that we do not own is someone else's.
        ([], [scaled(OURS, owner_uid="other")], ("ScaledObject", OURS)),
        ([], [scaled("elsewhere", target="web")], None),
        # Being deleted: already on its way out.
        ([{**hpa("old"), "metadata": {"name": "old", "deletionTimestamp": "x"}}], [], None),
    ],
)
def test_another_autoscaler_on_the_target_is_found(
    hpas: list[Obj], scaled_objects: list[Obj], expected: tuple[str, str] | None
) -> None:
    conflict = scaling_status.conflicting_autoscaler(hpas, scaled_objects, "tei", OURS, "uid")
    assert (None if conflict is None else (conflict.kind, conflict.name)) == expected


def test_one_embedding_proxy_scales_a_deployment_the_oldest() -> None:
    """Two EmbeddingProxies whose autoscaling names one Deployment would fight over its scale:
    the oldest scales it, and any other stands back, naming it."""

    def key(name: str, created: str, **autoscaling: Any) -> Any:
        spec = parse({"targetRef": {"name": name}, "autoscaling": autoscaling})
        return scaling_status.scaler_key("ns", name, created, spec)

    assert key("a", "t1") is None  # autoscaling off
    assert key("a", "t1", enabled=True, provider="None") is None  # bring your own
    assert key("a", "t1", enabled=True) == {("ns", "a"): ("t1", "a")}
    claimant = key("b", "t0", enabled=True, scaleTargetRef={"name": "tei"})
    assert claimant == {("ns", "tei"): ("t0", "b")}
    scalers = [("2026-01-02T00:00:00Z", "late"), ("2026-01-01T00:00:00Z", "early")]
    assert scaling_status.first_scaler(scalers, "early") is None
    conflict = scaling_status.first_scaler(scalers, "late")
    assert conflict is not None and (conflict.kind, conflict.name) == ("EmbeddingProxy", "early")
    assert "EmbeddingProxy 'early' already scales Deployment 'tei'" in conflict.message("tei")
    # Created in the same second: the name decides, the same way for both.
    same = [("t", "b"), ("t", "a")]
    assert scaling_status.first_scaler(same, "a") is None
    assert scaling_status.first_scaler(same, "b") is not None
    assert scaling_status.first_scaler([], "a") is None


def test_the_conflict_is_explained() -> None:
    message = scaling_status.Conflict("HorizontalPodAutoscaler", "tei-hpa").message("tei")
    assert "HorizontalPodAutoscaler 'tei-hpa'" in message and "'tei'" in message
    assert "stands back" in message


# ---- history in status -----------------------------------------------------------------------


def test_history_in_status_is_integers_and_round_trips() -> None:
    history = History(
        recommendations=(Recommendation(T0 + 0.123, 3), Recommendation(T0 + 5.5, 4)),
        scale_ups=(ScaleEvent(T0 + 5.5, 1),),
        scale_downs=(ScaleEvent(T0 + 9.25, 2),),
    )
    data = scaling_status.history_to_status(history)
    assert data["recommendations"][0] == {"atUnixMilliseconds": 1_700_000_000_123, "replicas": 3}

    def ints_only(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                ints_only(v)
        elif isinstance(value, list):
            for v in value:
                ints_only(v)
        else:
            assert isinstance(value, int) and not isinstance(value, bool)

    ints_only(data)
    assert scaling_status.history_from_status(data) == history


@pytest.mark.parametrize(
    "data",
    [
        None,
        "x",
        {"recommendations": [{"at": 1, "replicas": 2}]},
        {"recommendations": [{"atUnixMilliseconds": "soon", "replicas": 2}]},
        {"scaleUps": [{"atUnixMilliseconds": 1, "replicas": True}]},
        {"scaleDowns": [None]},
    ],
)
def test_unreadable_history_starts_afresh(data: Any) -> None:
    assert scaling_status.history_from_status(data) is None


def test_a_restarted_operator_continues_from_the_history_in_status() -> None:
    """A scale-down held by the window stays held after the history went through status."""
    policy = Policy(max_replicas=10)
    busy = decide(1, {"a": 400.0}, policy, None, T0)
    assert busy.desired_replicas == 5  # proposes 7; the rate policies allow 1 + 4
    stored = scaling_status.history_to_status(busy.history)
    idle_pods = {f"p{i}": 0.0 for i in range(5)}
    idle = decide(5, idle_pods, policy, scaling_status.history_from_status(stored), T0 + 60)
    assert idle.desired_replicas == 5 and idle.code == "ScaleDownStabilized"  # 7 in the window
    afresh = decide(5, idle_pods, policy, History(), T0 + 60)
    assert afresh.desired_replicas == 1  # what forgetting would have done


# ---- condition, Event and status after a decision --------------------------------------------


POLICY = Policy(min_replicas=1, max_replicas=4, target_queue_depth_per_pod=10)
EAGER = Policy(
    min_replicas=1,
    max_replicas=4,
    target_queue_depth_per_pod=10,
    scale_down=ScalingRules(0, "Max", DEFAULT_SCALE_DOWN.policies),
)


@pytest.mark.parametrize(
    ("policy", "current", "samples", "status", "reason"),
    [
        (POLICY, 1, {"a": 30.0}, "True", "Scaling"),
        (POLICY, 2, {"a": 10.0, "b": 10.0}, "True", "Stable"),
        (POLICY, 2, {"a": 100.0, "b": 100.0}, "True", "AtMaximum"),
        (POLICY, 5, {}, "True", "AtMaximum"),  # above maxReplicas: brought down to it
        (POLICY, 4, {f"p{i}": 50.0 for i in range(4)}, "True", "AtMaximum"),
        (EAGER, 1, {"a": 0.0}, "True", "AtMinimum"),
        (EAGER, 3, {"a": 2.0, "b": 2.0, "c": 1.0}, "True", "Scaling"),
        (POLICY, 2, {"a": None, "b": None}, "False", "NoMetrics"),
        (POLICY, 0, {}, "False", "ScaledToZero"),
    ],
)
def test_the_condition_says_what_the_autoscaler_did(
    policy: Policy, current: int, samples: dict[str, float | None], status: str, reason: str
) -> None:
    decision = decide(current, samples, policy, History(), T0)
    fact = scaling_status.decision_fact(decision, policy)
    assert (fact.type, fact.status, fact.reason) == (names.AUTOSCALING, status, reason)
    assert fact.message == decision.reason


def test_an_event_for_each_change_and_none_without() -> None:
    up = decide(1, {"a": 15.0}, POLICY, History(), T0)
    reason, message = scaling_status.scale_event(up, "tei") or ("", "")
    assert reason == "ScaledUp"
    assert message.startswith("scaled tei from 1 to 2: queue depth 15.0 per pod over 1 pod(s)")
    down = decide(3, {"a": 0.0, "b": 0.0, "c": 0.0}, EAGER, History(), T0)
    assert (scaling_status.scale_event(down, "tei") or ("",))[0] == "ScaledDown"
    steady = decide(2, {"a": 10.0, "b": 10.0}, POLICY, History(), T0)
    assert scaling_status.scale_event(steady, "tei") is None


def test_status_after_a_decision_fits_the_crd() -> None:
    decision = decide(1, {"a": 410.4}, POLICY, None, T0)
    status = scaling_status.decision_status(
        decision, "tei", decision.history, scaling_status.timestamp(T0)
    )
    assert status["observedQueueDepth"] == 410
    assert (status["currentReplicas"], status["desiredReplicas"]) == (1, 4)
    assert status["podsMeasured"] == 1
    assert status["lastScaleTime"] == "2023-11-14T22:13:20Z"
    jsonschema.validate({"autoscaling": status}, closed(crd_status_schema()))
    for bad in ({"observedQueueDepth": 410.4}, {"history": {"recommendations": [{"at": 1.5}]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"autoscaling": {**status, **bad}}, closed(crd_status_schema()))


def test_other_facts() -> None:
    assert scaling_status.disabled_fact(False, "Builtin").reason == "Disabled"
    assert "provider is None" in scaling_status.disabled_fact(True, "None").message
    fact = scaling_status.keda_fact("tei-embedding-proxy", "tei", DEFAULT_PROMETHEUS)
    assert (fact.status, fact.reason) == ("True", "KEDA")
    assert DEFAULT_PROMETHEUS in fact.message


def test_replacing_status_nulls_what_is_no_longer_wanted() -> None:
    current = {"scaleTargetName": "tei", "history": {"recommendations": []}, "desiredReplicas": 2}
    assert scaling_status.replacing(current, {"scaleTargetName": "tei"}) == {
        "scaleTargetName": "tei",
        "history": None,
        "desiredReplicas": None,
    }
    assert scaling_status.replacing(None, {"a": 1}) == {"a": 1}
    assert scaling_status.replacing(current, None) is None
