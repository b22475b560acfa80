"""The CRD is a valid CustomResourceDefinition; the examples are valid against it; and the CRD's
defaults are the operator's defaults."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tests.helpers.external_schemas import EXTERNAL

from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import ProxySpec

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crd.yaml"
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
K8S_VERSION = kubernetes_validate.latest_version()


def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def closed(node: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused, as the API server prunes them (and kubectl's
    strict field validation refuses them)."""
    node = copy.deepcopy(node)
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)
        node["properties"] = {k: closed(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = closed(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = closed(node["additionalProperties"])
    return node


def test_crd_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(crd(), K8S_VERSION, strict=True)


def test_crd_names_are_the_interface() -> None:
    spec = crd()["spec"]
    assert spec["group"] == names.GROUP
    assert spec["names"]["kind"] == names.KIND
    assert spec["names"]["plural"] == names.PLURAL
    assert spec["names"]["shortNames"] == [names.SHORT_NAME]
    assert spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert version["name"] == names.VERSION and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Target", "Ready", "Replicas", "Config", "Age"} <= set(columns)


# The one float: a lane's share of a batch is a fraction, as in the proxy's own config (and no
# unit would make a percentage any clearer). Its CEL rule allows for binary rounding.
FLOATS = {"schema.properties.spec.properties.batching.properties.lanes.items.properties.minShare"}


def test_crd_has_no_floats() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            is_float = node.get("type") == "number" and path not in FLOATS
            assert not is_float, f"{path} is a float; use an integer with a unit"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(schema(), "schema")
    for path in FLOATS:
        node: Any = schema()
        for key in path.split(".")[1:]:
            node = node[key]
        assert node["type"] == "number", path


def custom_resources() -> list[dict[str, Any]]:
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == names.KIND:
                out.append(doc)
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if doc["kind"] == names.KIND:
            assert doc["apiVersion"] == names.API_VERSION
            jsonschema.validate(doc, closed(schema()))
        elif (doc["apiVersion"], doc["kind"]) in EXTERNAL:
            jsonschema.validate(doc, closed(EXTERNAL[doc["apiVersion"], doc["kind"]]))
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_examples_include_an_embedding_proxy() -> None:
    assert custom_resources()


def test_the_schema_refuses_what_the_operator_refuses() -> None:
    strict = closed(schema())
    good = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "x"}}
    jsonschema.validate({**good, "spec": {"targetRef": {"name": "tei"}}}, strict)
    for spec in (
        {},
        {"targetRef": {"name": ""}},
        {"targetRef": {"name": "tei"}, "batching": {"maxWaitMilliseconds": 2.5}},
        {"targetRef": {"name": "tei"}, "batching": {"flushMode": "eager"}},
        {"targetRef": {"name": "tei"}, "sidecar": {"mode": "Sidecar"}},
        {"targetRef": {"name": "tei"}, "batching": {"maxBatchSzie": 8}},
        {"targetRef": {"name": "tei"}, "autoscaling": {"provider": "HPA"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": spec}, strict)


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: a missing field with a default gets it,
    then defaults apply inside the objects that exist."""
    if node.get("type") == "object" and isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    if node.get("type") == "array" and isinstance(value, list):
        value = [apply_defaults(node.get("items") or {}, v) for v in value]
    return value


def test_crd_defaults_are_the_operators_defaults() -> None:
    spec_schema = schema()["properties"]["spec"]
    defaulted = apply_defaults(spec_schema, {"targetRef": {"name": "tei"}})
    dump = {"mode": "json", "by_alias": True, "exclude_none": True}
    operator_view = ProxySpec.model_validate({"targetRef": {"name": "tei"}}).model_dump(**dump)
    assert ProxySpec.model_validate(defaulted).model_dump(**dump) == operator_view
    # And every default the operator has is written in the CRD (nothing left implicit), but the
    # sidecar's image: the operator's setting (EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE) fills it.
    assert "image" not in defaulted["sidecar"]
    assert operator_view["sidecar"].pop("image") == names.DEFAULT_SIDECAR_IMAGE
    assert defaulted == operator_view


def test_crd_defaults_inside_optional_objects_match_too() -> None:
    spec_schema = schema()["properties"]["spec"]
    given = {
        "targetRef": {"name": "tei"},
        "auth": {"apiKeysSecretRef": {"name": "a"}, "upstreamApiKeySecretRef": {"name": "b"}},
        "autoscaling": {"scaleTargetRef": {"name": "web"}, "lanes": ["a"]},
        "batching": {"lanes": [{"name": "a"}, {"name": "b", "weight": 2}]},
    }
    defaulted = apply_defaults(spec_schema, copy.deepcopy(given))
    dump = {"mode": "json", "by_alias": True, "exclude_none": True}
    operator_view = ProxySpec.model_validate(given).model_dump(**dump)
    operator_view["sidecar"].pop("image")  # the operator's setting, not the CRD's
    assert defaulted == operator_view
