"""Real helm, Kubernetes' own schemas, and the CRDs' schemas, for the packaging tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tests.helpers.control_plane import ControlPlane
from tests.helpers.external_schemas import EXTERNAL
from tests.helpers.tools import require_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-proxy"
MANIFESTS = ROOT / "manifests"

# The install in manifests/operator/ is the chart rendered with these.
RELEASE = "embedding-proxy"
NAMESPACE = "embedding-proxy-system"

Objects = list[dict[str, Any]]


# The CRDs a user applies first (README), in that order.
SHIPPED_CRDS = [MANIFESTS / "crd.yaml"]
CRD_NAMES = ["crd/embeddingproxies.embeddingproxy.io"]


@pytest.fixture(scope="session")
def helm() -> str:
    return require_helm()


@pytest.fixture(scope="session")
def api_server(control_plane: ControlPlane) -> ControlPlane:
    """The session's real API server with the shipped CRDs applied as the README says, and
    established."""
    control_plane.kubectl("apply", *(f for p in SHIPPED_CRDS for f in ("-f", str(p))))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRD_NAMES)
    return control_plane


def load_all(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., Objects]:
    """`helm template` with the given flags; the rendered objects, as `helm install` creates
    them (the `helm test` hooks apart: tests/chart/test_helm_test.py)."""

    def render(*flags: str, release: str = RELEASE, namespace: str = NAMESPACE) -> Objects:
        result = run_helm(
            helm, "template", release, str(CHART), "--namespace", namespace, "--skip-tests", *flags
        )
        assert result.returncode == 0, result.stderr
        return load_all(result.stdout)

    return render


def crd_documents() -> Objects:
    """Every CRD the project ships: the chart's crds/ and manifests/crd.yaml."""
    files = sorted(CHART.glob("crds/*.yaml"))
    if (MANIFESTS / "crd.yaml").is_file():
        files.append(MANIFESTS / "crd.yaml")
    return [
        d for f in files for d in load_all(f.read_text()) if d["kind"] == "CustomResourceDefinition"
    ]


def strict(schema: dict[str, Any], root: bool = False) -> dict[str, Any]:
    """The schema with unknown fields refused where the API server would not keep them: it drops
    them silently, and `kubectl apply` (strict field validation) refuses them."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if root:
            for field in ("apiVersion", "kind", "metadata"):
                out["properties"].setdefault(field, {})
        if (
            not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the version's openAPIV3Schema, refusing unknown fields; also the
    third-party kinds our examples use."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crd_documents():
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            schemas[key] = strict(version["schema"]["openAPIV3Schema"], root=True)
    for key, schema in EXTERNAL.items():
        schemas[key] = strict(schema, root=True)
    return schemas


K8S_VERSION = kubernetes_validate.latest_version()


def validate_objects(objects: Iterable[dict[str, Any]]) -> set[str]:
    """Validate each object against Kubernetes' schemas (strict: unknown fields fail) or, for a
    kind one of our CRDs defines, against that CRD's schema. Returns the kinds neither knows."""
    schemas = crd_schemas()
    unknown: set[str] = set()
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata'].get('name')}"
        key = (obj["apiVersion"], obj["kind"])
        if key in schemas:
            try:
                jsonschema.Draft7Validator(schemas[key]).validate(obj)
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path)
                pytest.fail(f"{where} does not match its CRD's schema at {path}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.add(obj["kind"])
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{where} is not valid Kubernetes {K8S_VERSION} at {path}: {e.message}")
    return unknown


def pod_specs(objects: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) for every workload object."""
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def by_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def proxies_monitor(objects: Objects) -> dict[str, Any]:
    """The PodMonitor of the proxies (the chart has another one, for the operator)."""
    return one([o for o in objects if o["metadata"]["name"].endswith("-proxies")], "PodMonitor")


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (a fixture, so no test imports conftest)."""
    return SimpleNamespace(
        root=ROOT,
        chart=CHART,
        manifests=MANIFESTS,
        release=RELEASE,
        namespace=NAMESPACE,
        k8s_version=K8S_VERSION,
        load_all=load_all,
        run_helm=run_helm,
        crd_documents=crd_documents,
        crd_schemas=crd_schemas,
        validate_objects=validate_objects,
        pod_specs=pod_specs,
        by_kind=by_kind,
        one=one,
        proxies_monitor=proxies_monitor,
    )
