"""Plain manifests: generated from the chart, valid, and in step with it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def manifest_files() -> list[Path]:
    return sorted((ROOT / "manifests").rglob("*.yaml"))


def test_render_manifests_is_up_to_date(helm: str) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "render-manifests"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": f"{Path(helm).parent}:{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stderr


def test_install_is_exactly_what_the_chart_renders(render: Any, kit: Any) -> None:
    installed = kit.load_all((kit.manifests / "operator" / "install.yaml").read_text())
    namespace = kit.one(installed, "Namespace")
    assert namespace["metadata"]["name"] == kit.namespace
    rest = [o for o in installed if o["kind"] != "Namespace"]
    assert rest == render()


def test_install_lives_in_its_own_namespace(kit: Any) -> None:
    installed = kit.load_all((kit.manifests / "operator" / "install.yaml").read_text())
    namespace = kit.one(installed, "Namespace")
    # The operator's pod meets the restricted Pod Security Standard, so the namespace enforces it.
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = {"ServiceAccount", "Deployment", "Role", "RoleBinding"}
    for obj in installed:
        if obj["kind"] in namespaced:
            assert obj["metadata"]["namespace"] == kit.namespace
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == kit.namespace
    kinds = {o["kind"] for o in installed}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    } <= kinds


def test_chart_crd_is_manifests_crd(kit: Any) -> None:
    source = kit.manifests / "crd.yaml"
    if not source.is_file():
        pytest.skip("manifests/crd.yaml is not written yet; the chart ships a provisional CRD")
    assert (kit.chart / "crds" / "embeddingproxies.yaml").read_text() == source.read_text(), (
        "charts/embedding-proxy/crds/embeddingproxies.yaml differs: run scripts/render-manifests"
    )


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_validates(path: Path, kit: Any) -> None:
    objects = kit.load_all(path.read_text())
    assert objects, f"{path} holds no objects"
    unknown = kit.validate_objects(objects)
    # Custom resources are checked against the CRDs the project ships; nothing is left unknown.
    assert unknown == set(), f"{path}: no schema for {unknown}"


def test_custom_resources_in_examples_are_checked_against_the_crd(kit: Any) -> None:
    """validate_objects must not pass a custom resource the CRD rejects."""
    schemas = kit.crd_schemas()
    assert ("embeddingproxy.io/v1alpha1", "EmbeddingProxy") in schemas
    bad = {
        "apiVersion": "embeddingproxy.io/v1alpha1",
        "kind": "EmbeddingProxy",
        "metadata": {"name": "bad"},
        "spec": {"targetRef": {"name": 42}},
    }
    with pytest.raises(pytest.fail.Exception, match="does not match its CRD's schema"):
        kit.validate_objects([bad])
    # A misspelt field would be dropped by the API server and refused by `kubectl apply`.
    typo = {**bad, "spec": {"targetRef": {"name": "tei"}, "targetReff": {"name": "tei"}}}
    with pytest.raises(pytest.fail.Exception, match="targetReff"):
        kit.validate_objects([typo])
