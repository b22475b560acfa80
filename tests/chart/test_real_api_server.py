"""The shipped CRDs on a real kube-apiserver: accepted, every CEL rule compiled and enforced."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.helpers import lane_specs, object_names
from tests.helpers.control_plane import ControlPlane
from tests.helpers.upstream_urls import ACCEPTED, BAD_URL, REFUSED, SELF_LOOP


@pytest.fixture(scope="module")
def crds(api_server: ControlPlane) -> ControlPlane:
    return api_server


def proxy(spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "embeddingproxy.io/v1alpha1",
            "kind": "EmbeddingProxy",
            "metadata": {"name": "probe", "namespace": "default"},
            "spec": {"targetRef": {"name": "tei"}, **spec},
        }
    )


def test_minimal_resource_is_accepted_and_defaulted(crds: ControlPlane) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=proxy({}))
    spec = json.loads(out.stdout)["spec"]
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tei"}
    assert spec["sidecar"]["ports"]["api"] != spec["sidecar"]["ports"]["metrics"]
    assert spec["autoscaling"]["minReplicas"] <= spec["autoscaling"]["maxReplicas"]
    assert spec["upstream"]["url"] == "http://127.0.0.1:80"
    # Left out, maxConcurrency is auto (the operator's and the proxy's default), with its bound.
    assert spec["batching"]["maxConcurrency"] == "auto"
    assert spec["batching"]["maxConcurrencyLimit"] == 32


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"sidecar": {"ports": {"api": 9464}}}, "ports.api and ports.metrics must differ"),
        (
            {"sidecar": {"ports": {"api": 7000, "metrics": 7000}}},
            "ports.api and ports.metrics must differ",
        ),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "minReplicas must not exceed maxReplicas",
        ),
        (
            {"upstream": {"url": "http://127.0.0.1:8000"}},
            "upstream.url points at one of the proxy's own ports",
        ),
        (
            {"upstream": {"url": "http://localhost:9464/x"}},
            "upstream.url points at one of the proxy's own ports",
        ),
        (
            {"sidecar": {"ports": {"api": 3000}}, "upstream": {"url": "http://127.0.0.1:3000"}},
            "upstream.url points at one of the proxy's own ports",
        ),
    ],
)
def test_each_rule_refuses_with_its_message(
    crds: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0
    assert message in out.stderr


@pytest.mark.parametrize(
    "spec",
    [
        {"upstream": {"url": "http://127.0.0.1:3000"}},
        {"upstream": {"url": "http://tei.default.svc:8000"}},
        {"sidecar": {"ports": {"api": 8080}}, "upstream": {"url": "http://localhost:8000/"}},
        {"autoscaling": {"minReplicas": 2}},
        {"batching": {"maxConcurrency": "auto", "maxConcurrencyLimit": 8}},
        {"batching": {"maxConcurrency": 6}},
    ],
)
def test_valid_partial_resources_are_accepted(crds: ControlPlane, spec: dict[str, Any]) -> None:
    crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec))


RANGE = "maxConcurrency must be auto or a number of calls from 1 to 1024"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("fast", RANGE),
        ("8", RANGE),
        (0, RANGE),
        (1025, RANGE),
        (2.5, "spec.batching.maxConcurrency: Invalid value"),  # neither integer nor string
    ],
)
def test_max_concurrency_is_auto_or_a_number_of_calls(
    crds: ControlPlane, value: Any, message: str
) -> None:
    spec = {"batching": {"maxConcurrency": value}}
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0
    assert message in out.stderr


# What an outside test found the CRD let through although the operator refused it, or both let
# through: each is refused at admission now, and the operator's unit tests run the same table.
MESSAGES = {
    SELF_LOOP: "upstream.url points at one of the proxy's own ports",
    BAD_URL: "upstream.url must be http(s)://host[:port][/path]",
}


@pytest.mark.parametrize(("url", "kind"), REFUSED)
def test_upstream_urls_refused_at_admission(crds: ControlPlane, url: str, kind: str) -> None:
    spec = {"upstream": {"url": url}}
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0, url
    assert MESSAGES[kind] in out.stderr


@pytest.mark.parametrize("url", ACCEPTED)
def test_upstream_urls_accepted_at_admission(crds: ControlPlane, url: str) -> None:
    spec = {"upstream": {"url": url}}
    crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec))


def test_names_longer_than_a_label_value_are_refused(crds: ControlPlane) -> None:
    doc = json.loads(proxy({}))
    doc["metadata"]["name"] = "p" * 64
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(doc), check=False)
    assert out.returncode != 0
    assert "metadata.name must be at most 63 characters" in out.stderr
    doc["metadata"]["name"] = "p" * 63
    crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(doc))


@pytest.mark.parametrize("field", ["minReplicas", "maxReplicas"])
def test_replica_bounds_are_int32(crds: ControlPlane, field: str) -> None:
    spec = {"autoscaling": {field: 2**31}}
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0
    assert "2147483647" in out.stderr


@pytest.mark.parametrize(("spec", "message"), lane_specs.REFUSED)
def test_lane_rules_refuse_with_their_messages(
    crds: ControlPlane, spec: dict[str, Any], message: str
) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0
    assert message in out.stderr


@pytest.mark.parametrize("spec", lane_specs.ACCEPTED)
def test_lane_specs_the_operator_accepts_are_accepted(
    crds: ControlPlane, spec: dict[str, Any]
) -> None:
    crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec))


def test_lanes_are_defaulted_and_bounded(crds: ControlPlane) -> None:
    spec = {"batching": {"lanes": [{"name": "interactive", "minShare": 0}, {"name": "batch"}]}}
    out = crds.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=proxy(spec))
    stored = json.loads(out.stdout)["spec"]["batching"]["lanes"]
    assert stored == [
        {"name": "interactive", "minShare": 0, "queueCapacity": 4096},
        {"name": "batch", "minShare": 0.1, "queueCapacity": 4096},
    ]
    for bad, field in (
        ({"lanes": [{"name": "Batch"}]}, "name"),
        ({"lanes": [{"name": "b", "minShare": 0.95}]}, "minShare"),
        ({"lanes": [{"name": "b", "queueCapacity": 0}]}, "queueCapacity"),
        ({"lanes": [{"name": f"l{i}", "minShare": 0} for i in range(9)]}, "lanes"),
    ):
        out = crds.kubectl(
            "apply", "--dry-run=server", "-f", "-", stdin=proxy({"batching": bad}), check=False
        )
        assert out.returncode != 0 and "spec.batching.lanes" in out.stderr, bad
        assert field in out.stderr
    # A lane named twice in the signal's list: refused as a set's duplicate.
    spec = {**lane_specs.lanes(*lane_specs.TWO), "autoscaling": {"lanes": ["batch", "batch"]}}
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
    assert out.returncode != 0 and "spec.autoscaling.lanes[1]: Duplicate value" in out.stderr


def probes(cases: list[tuple[str, str]]) -> str:
    """One dry-run List of EmbeddingProxies probe-0, probe-1, … (one kubectl call for a table)."""
    items = [json.loads(proxy({})) | {"spec": object_names.at(f, v)} for f, v in cases]
    for i, item in enumerate(items):
        item["metadata"]["name"] = f"probe-{i}"
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def test_object_names_that_could_leave_an_api_path_are_refused(crds: ControlPlane) -> None:
    cases = object_names.REFUSED
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=probes(cases), check=False)
    assert out.returncode != 0
    for i, (field, value) in enumerate(cases):
        refused = re.search(rf'"probe-{i}" is invalid: \[?spec\.{re.escape(field)}\b', out.stderr)
        assert refused, (field, value)
    assert "created" not in out.stdout and "configured" not in out.stdout


def test_object_names_the_operator_accepts_are_accepted(crds: ControlPlane) -> None:
    crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=probes(object_names.ACCEPTED))


# CEL functions and macros a Kubernetes 1.29 API server offers in CRD validation rules (the
# Kubernetes CEL documentation: the standard definitions, the extended strings library, the
# Kubernetes list, regex, URL and quantity libraries). The README promises 1.29 and later; the
# test server is newer, so it cannot tell a function that 1.29 lacks.
CEL_LIBRARIES_ON_1_29 = {
    "standard": "has all exists exists_one map filter size matches startsWith endsWith contains "
    "int uint double string bytes bool type dyn duration timestamp",
    "extended strings": "charAt indexOf lastIndexOf lowerAscii upperAscii replace split join "
    "substring trim",
    "Kubernetes lists and regex": "isSorted sum min max indexOf lastIndexOf find findAll",
    "Kubernetes URLs": "url isURL getScheme getHost getHostname getPort getEscapedPath getQuery",
    "Kubernetes quantities": "quantity isQuantity sign isInteger asInteger asApproximateFloat "
    "add sub isGreaterThan isLessThan compareTo",
}
CEL_ON_1_29 = frozenset(f for names in CEL_LIBRARIES_ON_1_29.values() for f in names.split())


def cel_rules(schema: dict[str, Any]) -> list[str]:
    found = [v["rule"] for v in schema.get("x-kubernetes-validations", [])]
    for key in ("properties", "additionalProperties", "items"):
        child = schema.get(key)
        children = child.values() if key == "properties" and child else [child]
        found += [r for c in children if isinstance(c, dict) for r in cel_rules(c)]
    return found


def test_cel_rules_use_only_what_kubernetes_1_29_has(kit: Any) -> None:
    rules = [
        rule
        for crd in kit.crd_documents()
        for version in crd["spec"]["versions"]
        for rule in cel_rules(version["schema"]["openAPIV3Schema"])
    ]
    assert len(rules) >= 3
    for rule in rules:
        without_strings = re.sub(r"'[^']*'|\"[^\"]*\"", "''", rule)
        called = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", without_strings))
        assert called <= CEL_ON_1_29, f"{rule}: {called - CEL_ON_1_29} may be newer than 1.29"


def test_sidecar_workers_is_a_count_left_unset_by_default(crds: ControlPlane) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=proxy({}))
    assert "workers" not in json.loads(out.stdout)["spec"]["sidecar"]  # the CPU limit decides
    spec = {"sidecar": {"workers": 4}}
    out = crds.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=proxy(spec))
    assert json.loads(out.stdout)["spec"]["sidecar"]["workers"] == 4
    for bad in (0, 1025, "auto"):
        spec = {"sidecar": {"workers": bad}}
        out = crds.kubectl("apply", "--dry-run=server", "-f", "-", stdin=proxy(spec), check=False)
        assert out.returncode != 0, bad
        assert "spec.sidecar.workers" in out.stderr
