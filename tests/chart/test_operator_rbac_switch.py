"""`helm upgrade` from cluster to namespaced mode takes the old pod's grant on its peering object
away: the operator, acting as the chart's ServiceAccount on a real API server, stops promptly
with one clear line instead of retrying its peering PATCH until it is killed."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers.control_plane import ControlPlane
from tests.helpers.processes import Process, free_port, start_process

RELEASE = "switch"
NAMESPACE = "rbac-switch"
PEERING = "switch-embedding-proxy"  # the chart's default: the full name
SA = "switch-embedding-proxy"
OPERATOR = str(Path(sys.executable).parent / "embedding-proxy-operator")
STOPPING = f"may no longer patch its peering object clusterkopfpeerings/{PEERING}"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def chart_rbac(api_server: ControlPlane, render: Callable[..., Any]) -> Iterator[list[Any]]:
    """The chart's cluster-mode ServiceAccount (created here) and its RBAC and peering object
    (for each test to apply); not its Deployment: the tests run the operator themselves."""
    objects = render(release=RELEASE, namespace=NAMESPACE)
    api_server.kubectl("create", "namespace", NAMESPACE)
    api_server.apply(by_kind(objects, "ServiceAccount"))
    try:
        yield by_kind(objects, "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering")
    finally:
        for kind in ("clusterrolebinding", "clusterrole", "clusterkopfpeering"):
            api_server.kubectl("delete", kind, PEERING, "--ignore-not-found", "--wait=false")
        api_server.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def by_kind(objects: list[Any], *kinds: str) -> list[Any]:
    found = [o for o in objects if o["kind"] in kinds]
    assert sorted(o["kind"] for o in found) == sorted(kinds)
    return found


@pytest.fixture
def cluster_mode(api_server: ControlPlane, chart_rbac: list[Any]) -> ControlPlane:
    """Cluster mode as installed: its grants, and a fresh peering object."""
    api_server.kubectl("delete", "clusterkopfpeering", PEERING, "--ignore-not-found")
    api_server.apply(chart_rbac)
    return api_server


def start_operator(plane: ControlPlane, tmp_path: Path, pod: str) -> Process:
    kubeconfig = plane.token_kubeconfig(NAMESPACE, SA, tmp_path / f"{pod}.kubeconfig")
    port = free_port()
    process = start_process(
        # The chart's arguments in cluster mode (templates/deployment.yaml).
        [
            OPERATOR,
            "--all-namespaces",
            f"--peering={PEERING}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
        ],
        port,
        tmp_path / f"{pod}.log",
        env={"KUBECONFIG": str(kubeconfig), "POD_ID": pod, "POD_NAMESPACE": NAMESPACE},
        ready_path="/healthz",
        timeout=60,
    )
    # It has joined the peering: its keep-alive is in the object's status.
    wait_for(lambda: pod in peers(plane), f"{pod} in the peering object")
    return process


def peers(plane: ControlPlane) -> str:
    return plane.kubectl("get", "clusterkopfpeering", PEERING, "-o", "jsonpath={.status}").stdout


def upgrade_to_namespaced(plane: ControlPlane) -> None:
    """What `helm upgrade --set operator.watch.mode=namespaced` does to the old pod's grants."""
    plane.kubectl("delete", "clusterrolebinding", PEERING)
    # The API server's authorizer follows RBAC objects through a watch: wait until it refuses.
    user = f"system:serviceaccount:{NAMESPACE}:{SA}"
    wait_for(
        lambda: (
            plane.kubectl(
                "auth",
                "can-i",
                "patch",
                "clusterkopfpeerings.kopf.dev",
                f"--as={user}",
                check=False,
            ).stdout.strip()
            == "no"
        ),
        "the grant to go",
    )


def forbidden_peering_patches(plane: ControlPlane) -> list[dict[str, Any]]:
    return [
        e
        for e in plane.audit_events()
        if e.get("stage") == "ResponseComplete"
        and e.get("verb") == "patch"
        and e.get("objectRef", {}).get("resource") == "clusterkopfpeerings"
        and e.get("objectRef", {}).get("name") == PEERING
        and e.get("user", {}).get("username") == f"system:serviceaccount:{NAMESPACE}:{SA}"
        and e.get("responseStatus", {}).get("code") == 403
    ]


def test_stops_by_itself_once_its_peering_is_forbidden(
    cluster_mode: ControlPlane, tmp_path: Path
) -> None:
    operator = start_operator(cluster_mode, tmp_path, "switch-old-a")
    before = len(forbidden_peering_patches(cluster_mode))
    try:
        upgrade_to_namespaced(cluster_mode)
        # A peer that died long ago: the operator cleans it out of the peering object at once
        # (rather than at its next keep-alive, up to a minute later), and so meets the 403.
        cluster_mode.kubectl(
            "patch",
            "clusterkopfpeering",
            PEERING,
            "--type=merge",
            "-p",
            '{"status":{"gone":{"priority":0,"lifetime":1,"lastseen":"2020-01-01T00:00:00"}}}',
        )
        wait_for(lambda: operator.proc.poll() is not None, "the operator to exit")
    finally:
        operator.stop()
    log = operator.output()
    assert operator.proc.returncode == 3, log
    stopping = [line for line in log.splitlines() if STOPPING in line]
    assert len(stopping) == 1, log
    assert "CRITICAL" in stopping[0] and "exiting with status 3" in stopping[0]
    # The first try and three retries, not kopf's nine tries over 54 s (and then as many again).
    assert 1 <= len(forbidden_peering_patches(cluster_mode)) - before <= 4


def test_stops_at_once_when_told_to_after_its_peering_is_forbidden(
    cluster_mode: ControlPlane, tmp_path: Path
) -> None:
    operator = start_operator(cluster_mode, tmp_path, "switch-old-b")
    try:
        upgrade_to_namespaced(cluster_mode)
        before = len(forbidden_peering_patches(cluster_mode))
        operator.signal(signal.SIGTERM)  # the rollout replaces the pod
        wait_for(lambda: operator.proc.poll() is not None, "the operator to exit")
    finally:
        operator.stop()
    log = operator.output()
    assert operator.proc.returncode == 0, log
    # Its goodbye to the peering is sent once, not retried for a minute.
    wait_for(lambda: len(forbidden_peering_patches(cluster_mode)) > before, "the audit entry")
    assert len(forbidden_peering_patches(cluster_mode)) == before + 1
    assert "Left the peering without a goodbye" in log
    assert STOPPING not in log
