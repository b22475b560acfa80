"""`helm test` on the real API server. The control plane has no kubelet, so this test stands in
for it: it marks the operator's pod ready, and runs the test pod's command here, as the pod's
own ServiceAccount (a token from the API server, so the chart's RBAC for it is what is tested),
then reports the command's exit as the pod's phase, which is what `helm test` waits for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.helpers.control_plane import ControlPlane

NAMESPACE, RELEASE = "ep-helm-test", "ept"
DEPLOYMENT = f"{RELEASE}-embedding-proxy"
TEST_POD = f"{RELEASE}-embedding-proxy-test"


def on_plane(plane: ControlPlane) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}


def until(condition, timeout: float = 90.0) -> Any:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def pod(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    done = plane.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def set_status(plane: ControlPlane, name: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch", "pod", name, "-n", NAMESPACE, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def run_as_its_kubelet(
    plane: ControlPlane, spec: dict[str, Any], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """The pod's one container's command, run here with its ServiceAccount's credentials."""
    (container,) = spec["containers"]
    command = [sys.executable if c == "python" else c for c in container["command"]]
    kubeconfig = plane.token_kubeconfig(
        NAMESPACE, spec["serviceAccountName"], tmp / "sa.kubeconfig"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    return subprocess.run(
        [*command, *container.get("args", [])],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "KUBECONFIG": str(kubeconfig)},
    )


def test_helm_test_passes_once_the_operator_is_available(
    api_server: ControlPlane, helm: str, kit: Any, tmp_path: Path
) -> None:
    plane = api_server
    plane.kubectl("create", "namespace", NAMESPACE)
    plane.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    env = on_plane(plane)
    install = [helm, "install", RELEASE, str(kit.chart), "-n", NAMESPACE, "--skip-crds"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    tester: subprocess.Popen[str] | None = None
    try:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

        def operator_pod() -> str:
            out = plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name")
            return out.stdout.strip().removeprefix("pod/")

        name = until(operator_pod)

        # Before the operator is up, `helm test` fails, saying why.
        tester = subprocess.Popen(
            [helm, "test", RELEASE, "-n", NAMESPACE, "--timeout", "120s"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        first = until(lambda: pod(plane, TEST_POD))
        early = run_as_its_kubelet(plane, first["spec"], tmp_path)
        assert early.returncode == 1, early.stdout + early.stderr
        assert "FAILED operator deployment" in early.stdout
        assert "ok    CRD embeddingproxies.embeddingproxy.io: established" in early.stdout
        set_status(plane, TEST_POD, {"phase": "Failed"})
        out, _ = tester.communicate(timeout=120)
        assert tester.returncode != 0, out

        # The operator's pod runs and is ready (what a kubelet would report).
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": now}
        set_status(plane, name, {"phase": "Running", "conditions": [ready]})
        plane.kubectl(
            "wait", "--for=condition=Available", "--timeout=90s", f"deployment/{DEPLOYMENT}",
            "-n", NAMESPACE,
        )  # fmt: skip

        tester = subprocess.Popen(
            [helm, "test", RELEASE, "-n", NAMESPACE, "--timeout", "120s"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        # A new test pod (the old one is replaced: before-hook-creation).
        second = until(
            lambda: (
                (p := pod(plane, TEST_POD))
                and p["metadata"]["uid"] != first["metadata"]["uid"]
                and p
            )
        )
        checked = run_as_its_kubelet(plane, second["spec"], tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert (
            f"ok    operator deployment {NAMESPACE}/{DEPLOYMENT}: 1 of 1 replicas available"
            in checked.stdout
        )
        set_status(plane, TEST_POD, {"phase": "Succeeded"})
        out, _ = tester.communicate(timeout=120)
        assert tester.returncode == 0, out
        assert f"TEST SUITE:     {TEST_POD}" in out and "Phase:          Succeeded" in out
        # A passed test leaves none of its objects behind (hook-succeeded).
        assert leftovers(plane) == []
    finally:
        if tester is not None and tester.poll() is None:
            tester.kill()
            tester.wait()
        subprocess.run(
            [helm, "uninstall", RELEASE, "-n", NAMESPACE], capture_output=True, timeout=180, env=env
        )
    assert leftovers(plane) == []


def leftovers(plane: ControlPlane) -> list[str]:
    """The release's objects still there: the `helm test` ones are named `<fullname>-test`."""
    kinds = "pods,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings"
    out = plane.kubectl(
        "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name"
    )
    return [n for n in out.stdout.split() if n.endswith("-test")]
