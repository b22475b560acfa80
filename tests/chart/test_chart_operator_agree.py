"""The chart and the operator agree: the arguments the chart passes are ones `kopf run` takes,
the replicas elect a leader with the operator's Lease and never with kopf's peering, the
liveness probe asks where kopf answers, and the PodMonitor scrapes the port the operator gives
the sidecar."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import jsonpatch
import kopf.cli
import pytest

from embedding_proxy_operator.cli import peering_problem, run_args
from embedding_proxy_operator.handlers.leading import identity
from embedding_proxy_operator.logic import patches, render
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.settings import Options
from embedding_proxy_operator.model.spec import parse

Obj = dict[str, Any]
MONITORING = ("--api-versions", "monitoring.coreos.com/v1", "--set", "podMonitor.enabled=true")
NAMESPACED = (
    "--set",
    "operator.watch.mode=namespaced",
    "--set-json",
    'operator.watch.namespaces=["team-a","team-b"]',
)


def operator_container(objects: list[Obj]) -> Obj:
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def kopf_params(container: Obj) -> dict[str, Any]:
    """What `kopf run` makes of the container's command line (parsed by kopf's own
    command-line parser, not run)."""
    assert peering_problem(container["args"], {}) is None
    args = run_args(container["args"])
    assert args[0] == "run"
    return dict(kopf.cli.run.make_context("run", args[1:]).params)


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_kopf_run_takes_the_charts_arguments(mode: str, render: Any, kit: Any) -> None:
    flags = NAMESPACED if mode == "namespaced" else ()
    objects = render(*flags, "--set", "operator.replicas=2")
    container = operator_container(objects)
    params = kopf_params(container)
    assert params["peering_name"] is None and params["standalone"] is True
    if mode == "cluster":
        assert params["clusterwide"] is True and params["namespaces"] == ()
    else:
        assert params["clusterwide"] is False
        assert params["namespaces"] == ("team-a", "team-b")
    assert params["modules"] == ("embedding_proxy_operator.handlers",)


def test_replicas_share_the_charts_lease_each_under_its_pod_name(render: Any, kit: Any) -> None:
    objects = render("--set", "operator.replicas=2")
    container = operator_container(objects)
    env = {e["name"]: e for e in container["env"]}
    literal = {k: e["value"] for k, e in env.items() if "value" in e}
    options = Options.from_env(literal)
    (role,) = [
        r
        for r in kit.by_kind(objects, "Role")
        if any(rule["resources"] == ["leases"] for rule in r["rules"])
    ]
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named[0]["resourceNames"] == [options.lease_name]
    assert role["metadata"]["namespace"] == kit.namespace
    # The Lease lives in the pod's namespace, and each replica holds it under its pod's name.
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert (
        identity({"POD_ID": "embedding-proxy-5d8c7b9f4-x2kq7"}) == "embedding-proxy-5d8c7b9f4-x2kq7"
    )
    assert (options.lease.lease_seconds, options.lease.renew_deadline_seconds) == (15, 10)


def test_liveness_probe_asks_where_kopf_answers(render: Any) -> None:
    container = operator_container(render("--set", "operator.healthPort=9090"))
    params = kopf_params(container)
    url = urlsplit(params["liveness_endpoint"])
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert url.scheme == "http" and url.hostname == "0.0.0.0"  # the kubelet probes the pod IP
    assert url.port == ports[probe["port"]] == 9090
    assert url.path == probe["path"] == "/healthz"


# ---- the PodMonitor and what the operator puts into pods ---------------------------------------


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector applied to labels (an empty selector matches everything)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def scraped(monitor: Obj, pod_template: Obj) -> list[tuple[str, int]]:
    """(container, port) pairs of a pod that Prometheus would scrape for this PodMonitor: pods the
    selector matches; container ports named as the endpoint's port; then the endpoint's `keep`
    relabelings on the container name."""
    if not matches(monitor["spec"]["selector"], pod_template["metadata"].get("labels") or {}):
        return []
    spec = pod_template["spec"]
    out: list[tuple[str, int]] = []
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            keep = all(
                r["regex"] == c["name"]
                for r in endpoint.get("relabelings", [])
                if r["action"] == "keep"
                and r["sourceLabels"] == ["__meta_kubernetes_pod_container_name"]
            )
            for port in c.get("ports") or []:
                if port.get("name") == endpoint["port"] and keep:
                    out.append((c["name"], port["containerPort"]))
    return out


def with_sidecar(deployment: Obj, spec: Mapping[str, Any], native: bool = True) -> Obj:
    """The Deployment after the operator's patch, as the operator renders it."""
    parsed = parse({"targetRef": {"name": deployment["metadata"]["name"]}, **spec})
    ops = patches.inject_ops(
        deployment,
        "tei",
        render.sidecar_container(parsed, native),
        render.volumes(parsed, "tei"),
        render.restart_hash(render.proxy_config(parsed)),
        render.termination(parsed, sleep_action=True),
    )
    return jsonpatch.apply_patch(copy.deepcopy(deployment), ops)


def example_tei(objects: list[Obj]) -> Obj:
    (tei,) = [
        d
        for d in objects
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "example-tei"
    ]
    return tei


@pytest.mark.parametrize("native", [True, False], ids=["native-sidecar", "container"])
@pytest.mark.parametrize(
    "ports", [{}, {"metrics": 9100, "api": 8100}], ids=["default-ports", "own-ports"]
)
def test_pod_monitor_scrapes_exactly_the_sidecars_metrics_port(
    native: bool, ports: Obj, render: Any, kit: Any
) -> None:
    objects = render(*MONITORING, "--set", "example.enabled=true")
    monitor = kit.proxies_monitor(objects)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    tei = example_tei(objects)
    assert scraped(monitor, tei["spec"]["template"]) == []  # before the operator's patch

    after = with_sidecar(tei, {"sidecar": {"ports": ports}} if ports else {}, native)
    metrics_port = ports.get("metrics", 9464)
    assert scraped(monitor, after["spec"]["template"]) == [(names.SIDECAR_NAME, metrics_port)]


def test_pod_monitor_skips_a_users_port_of_the_same_name(render: Any, kit: Any) -> None:
    monitor = kit.proxies_monitor(render(*MONITORING))
    tei = example_tei(render("--set", "example.enabled=true"))
    tei["spec"]["template"]["spec"]["containers"][0]["ports"].append(
        {"name": "proxy-metrics", "containerPort": 7000}
    )
    after = with_sidecar(tei, {})
    assert scraped(monitor, after["spec"]["template"]) == [(names.SIDECAR_NAME, 9464)]


def test_a_narrowed_pod_selector_still_finds_the_sidecar(render: Any, kit: Any) -> None:
    selector = {"matchLabels": {"app.kubernetes.io/component": "example-tei"}}
    objects = render(
        *MONITORING,
        "--set",
        "example.enabled=true",
        "--set-json",
        f"podMonitor.podSelector={json.dumps(selector)}",
    )
    monitor = kit.proxies_monitor(objects)
    assert monitor["spec"]["selector"] == selector
    after = with_sidecar(example_tei(objects), {})
    assert scraped(monitor, after["spec"]["template"]) == [(names.SIDECAR_NAME, 9464)]
