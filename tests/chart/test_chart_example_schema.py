"""`example.embeddingProxySpec` is checked against the CRD's schema when the chart is rendered:
a misspelt or mistyped field fails `helm install` instead of being dropped by the API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ("--set", "example.enabled=true", "--set", "example.variant=cpu")


def with_spec(spec: dict[str, Any]) -> tuple[str, ...]:
    return (*EXAMPLE, "--set-json", f"example.embeddingProxySpec={json.dumps(spec)}")


def test_a_full_spec_renders_and_matches_the_crd(render: Any, kit: Any) -> None:
    spec = {
        "batching": {"maxBatchSize": 64, "flushMode": "deadline", "maxWaitMilliseconds": 3},
        "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4},
        "limits": {"maxInputsPerRequest": 256},
    }
    objects = render(*with_spec(spec))
    proxy = kit.one(objects, "EmbeddingProxy")
    assert proxy["spec"]["batching"]["maxBatchSize"] == 64
    kit.validate_objects([proxy])  # the CRD's own schema, unknown fields refused


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"batching": {"maxBatchSise": 3}}, "additional properties 'maxBatchSise' not allowed"),
        (
            {"batching": {"maxBatchSize": "many"}},
            "/example/embeddingProxySpec/batching/maxBatchSize",
        ),
        ({"batching": {"flushMode": "eager"}}, "/example/embeddingProxySpec/batching/flushMode"),
        ({"autoscalling": {"enabled": True}}, "additional properties 'autoscalling' not allowed"),
    ],
)
def test_a_wrong_spec_fails_at_render_time(
    spec: dict[str, Any], message: str, helm: str, kit: Any
) -> None:
    result = kit.run_helm(helm, "template", "x", str(kit.chart), *with_spec(spec))
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_the_values_schema_holds_the_crds_spec() -> None:
    # scripts/render-manifests --check (test_chart_manifests) keeps the copy exact; this says
    # what the copy is for.
    values = json.loads((ROOT / "charts/embedding-proxy/values.schema.json").read_text())
    spec = values["properties"]["example"]["properties"]["embeddingProxySpec"]
    assert {"batching", "autoscaling", "upstream", "sidecar"} <= spec["properties"].keys()
    assert spec["additionalProperties"] is False
