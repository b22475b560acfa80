"""Everything the project ships, on a real kube-apiserver: every manifest and every object the
chart renders passes `kubectl apply --dry-run=server` (schemas, CEL rules, defaulting, Pod
Security `restricted`), and `helm install` / `helm upgrade` work as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.control_plane import ControlPlane, start_control_plane
from tests.helpers.external_schemas import EXTERNAL

Objects = list[dict[str, Any]]
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"

# (what, namespace, `helm template` flags): the chart's renders a user installs.
RENDERS = [
    ("default values", "ep-default", []),
    ("example, cpu", "ep-cpu", ["--set", "example.enabled=true", "--set", "example.variant=cpu"]),
    ("example, gpu", "ep-gpu", ["--set", "example.enabled=true", "--set", "example.variant=gpu"]),
    (
        # fullnameOverride's most (63 characters): every name made from it, and the example's.
        "longest fullname",
        "ep-longest",
        ["--set", f"fullnameOverride=ep-{'x' * 60}", "--set", "example.enabled=true"],
    ),
    (
        "namespaced mode",
        "ep-namespaced",
        [
            "--set",
            "operator.watch.mode=namespaced",
            "--set-json",
            'operator.watch.namespaces=["ep-ml","ep-search"]',
        ],
    ),
]


def stand_in_crd(api_version: str, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD for a third-party kind our examples use, with the schema of the fields we use: the
    API server then refuses any field of ours that the real CRD would not keep."""
    group, version = api_version.split("/")
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def ensure_namespaces(plane: ControlPlane, names: set[str]) -> None:
    """Create the namespaces, labelled for Pod Security `restricted` as the README says."""
    existing = set(plane.kubectl("get", "namespaces", "-o", "name").stdout.split())
    for name in sorted(names):
        if f"namespace/{name}" not in existing:
            plane.kubectl("create", "namespace", name)
        plane.kubectl("label", "--overwrite", "namespace", name, RESTRICTED)


def dry_run(plane: ControlPlane, objects: Objects, *flags: str) -> str:
    """`kubectl apply --dry-run=server` of all of them in one call; its warnings."""
    text = "\n---\n".join(json.dumps(o) for o in objects)
    done = plane.kubectl("apply", "--dry-run=server", *flags, "-f", "-", stdin=text, check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def server(api_server: ControlPlane) -> ControlPlane:
    api_server.apply([stand_in_crd(*key, schema) for key, schema in EXTERNAL.items()])
    names = [f"crd/{kind.lower()}s.{v.split('/')[0]}" for v, kind in EXTERNAL]
    api_server.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return api_server


def test_every_manifest_passes_a_server_dry_run(server: ControlPlane, kit: Any) -> None:
    manifests = kit.manifests
    crds = kit.load_all((manifests / "crd.yaml").read_text())
    install = kit.load_all((manifests / "operator" / "install.yaml").read_text())
    examples = [
        o for f in sorted(manifests.glob("examples/*.yaml")) for o in kit.load_all(f.read_text())
    ]
    assert len(crds) == 1 and examples and install

    # install.yaml brings its own Namespace, labelled `restricted`: create it as it says.
    server.apply(kit.by_kind(install, "Namespace"))
    warnings = dry_run(server, crds) + dry_run(server, install)
    assert "PodSecurity" not in warnings, warnings
    # The examples pass Pod Security `restricted` too, as the chart's example does.
    ensure_namespaces(server, {"ep-examples"})
    warnings = dry_run(server, examples, "--namespace", "ep-examples")
    assert "PodSecurity" not in warnings, warnings


@pytest.mark.parametrize(("what", "namespace", "flags"), RENDERS, ids=[r[0] for r in RENDERS])
def test_every_object_the_chart_renders_passes_a_server_dry_run(
    server: ControlPlane,
    render: Callable[..., Objects],
    what: str,
    namespace: str,
    flags: list[str],
) -> None:
    objects = render(*flags, release="ep", namespace=namespace)
    ensure_namespaces(
        server,
        {namespace} | {o["metadata"]["namespace"] for o in objects if "namespace" in o["metadata"]},
    )
    warnings = dry_run(server, objects)
    assert "PodSecurity" not in warnings, f"{what}: {warnings}"


def helm_on(plane: ControlPlane, helm: str, *args: str) -> str:
    done = subprocess.run(
        [helm, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


def crd_managers(plane: ControlPlane) -> list[str]:
    out = plane.kubectl(
        "get", "crd", "embeddingproxies.embeddingproxy.io", "--show-managed-fields", "-o", "json"
    ).stdout
    return sorted(m["manager"] for m in json.loads(out)["metadata"]["managedFields"])


def wait_for_pod(plane: ControlPlane, namespace: str, release: str) -> None:
    """The operator Deployment's ReplicaSet made a pod: admitted under the namespace's Pod
    Security level (the API server refuses pods, not Deployments, that break it)."""
    selector = f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator"
    end = time.monotonic() + 90
    while time.monotonic() < end:
        pods = plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout
        if pods.strip():
            return
        time.sleep(0.5)
    events = plane.kubectl("get", "events", "-n", namespace).stdout
    raise AssertionError(f"no operator pod in {namespace}: {events}")


def test_readme_flow_installs_and_upgrades_with_crds_applied_first(
    server: ControlPlane, helm: str, kit: Any
) -> None:
    """README: CRDs with kubectl (the session did that), a namespace labelled `restricted`, then
    `helm install --skip-crds`; Helm leaves the CRDs alone, and `helm upgrade` works."""
    release, namespace = "ep-readme", "ep-readme"
    before = crd_managers(server)
    server.kubectl("create", "namespace", namespace)
    server.kubectl("label", "namespace", namespace, RESTRICTED)
    try:
        chart = str(kit.chart)
        helm_on(server, helm, "install", release, chart, "-n", namespace, "--skip-crds")
        assert crd_managers(server) == before
        wait_for_pod(server, namespace, release)
        helm_on(
            server,
            helm,
            "upgrade",
            release,
            chart,
            "-n",
            namespace,
            "--reuse-values",
            "--set",
            "operator.replicas=2",
        )
        assert "STATUS: deployed" in helm_on(server, helm, "status", release, "-n", namespace)
        assert crd_managers(server) == before
    finally:
        helm_on(server, helm, "uninstall", release, "-n", namespace)


def test_namespaced_install_without_skip_crds_then_upgrade_to_cluster_mode(
    server: ControlPlane, helm: str, kit: Any
) -> None:
    """Without --skip-crds, Helm 4 server-side applies crds/ on install even though the CRDs
    exist (here the same as kubectl applied: no conflict); upgrades never touch them."""
    release, namespace = "ep-ns", "ep-helm-ns"
    chart = str(kit.chart)
    server.kubectl("create", "namespace", "ep-helm-ns2")  # a watched namespace: the user's
    try:
        helm_on(
            server,
            helm,
            "install",
            release,
            chart,
            "-n",
            namespace,
            "--create-namespace",
            "--set",
            "operator.watch.mode=namespaced",
            "--set-json",
            f'operator.watch.namespaces=["{namespace}","ep-helm-ns2"]',
        )
        assert "helm" in crd_managers(server)
        roles = server.kubectl(
            "get", "roles", "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        ).stdout.split()
        # One per watched namespace, and the Lease's in the release namespace.
        assert len(roles) == 3
        helm_on(
            server,
            helm,
            "upgrade",
            release,
            chart,
            "-n",
            namespace,
            "--set",
            "operator.watch.mode=cluster",
        )
        # The watched namespaces' Roles are gone; the Lease's stays, as in every mode.
        assert server.kubectl(
            "get", "roles", "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        ).stdout.split() == [
            f"role.rbac.authorization.k8s.io/{release}-embedding-proxy-leader-election"
        ]
        server.kubectl("get", "clusterrole", f"{release}-embedding-proxy")
    finally:
        helm_on(server, helm, "uninstall", release, "-n", namespace)


def test_first_try_is_one_helm_install_on_a_fresh_cluster(
    tmp_path: Path, helm: str, kit: Any
) -> None:
    """README's first try, on an API server that has never seen the project: one `helm install`
    brings the CRDs (from crds/), the namespace labelled `restricted` (namespace.create), the
    operator admitted under it, and the first EmbeddingProxy is accepted."""
    fresh = start_control_plane(tmp_path / "fresh")
    release, namespace = "embedding-proxy", "embedding-proxy-system"
    repository = "registry.example.com/embedding-proxy"
    try:
        assert "embeddingproxies" not in fresh.kubectl("get", "crd", "-o", "name").stdout
        helm_on(
            fresh, helm, "install", release, str(kit.chart), "-n", namespace,
            "--create-namespace", "--set", "namespace.create=true",
            "--set", f"image.repository={repository}",
        )  # fmt: skip
        labels = json.loads(fresh.kubectl("get", "namespace", namespace, "-o", "json").stdout)
        assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        wait_for_pod(fresh, namespace, release)
        pods = json.loads(fresh.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
        (pod,) = pods["items"]
        assert [c["image"] for c in pod["spec"]["containers"]] == [f"{repository}-operator:0.1.0"]
        fresh.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/embeddingproxies.embeddingproxy.io",
        )  # fmt: skip
        fresh.kubectl("create", "namespace", "ml")
        fresh.apply(
            {
                "apiVersion": "embeddingproxy.io/v1alpha1",
                "kind": "EmbeddingProxy",
                "metadata": {"name": "tei", "namespace": "ml"},
                "spec": {"targetRef": {"name": "tei"}},
            }
        )
        # Uninstall succeeds and keeps the namespace (deleting it would take the release's own
        # record before Helm purges it); the README's kubectl command deletes it after.
        # (No operator ran here to put its finalizer on it.)
        fresh.kubectl("delete", "embeddingproxies", "--all", "-A")
        helm_on(fresh, helm, "uninstall", release, "-n", namespace)
        assert not fresh.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
        fresh.kubectl("get", "namespace", namespace)
    finally:
        fresh.stop()
