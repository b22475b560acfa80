"""Uninstalling as the README says, on the real API server with real helm: the EmbeddingProxies
deleted (and waited for) while the operator still runs, then `helm uninstall`. Nothing of the
operator's is left: no EmbeddingProxy, no ConfigMap, the Deployment as the user wrote it. And the
documented way out for an EmbeddingProxy stuck on its finalizer (the operator gone first) works.
The release has the longest fullnameOverride (63 characters): it installs, and the webhook
configuration the operator writes points at the Service the chart made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml
from harness import Api, Obj, Operators, Paths, eventually, sidecar, stop, tei_deployment
from harness import embedding_proxy as proxy_object
from installed import CHART, account_of
from tests.helpers.control_plane import ControlPlane
from tests.helpers.tools import require_helm

from embedding_proxy_operator.model import names

# fullnameOverride's most; names made from it with a suffix (the webhook Service) are cut short.
LONGEST = "embedding-proxy-" + "x" * 46 + "a"


def helm(plane: ControlPlane, *args: str) -> str:
    done = subprocess.run(
        [require_helm(), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
        check=False,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


async def test_the_documented_uninstall_order_leaves_nothing_behind(
    cluster: ControlPlane, api: Api, paths: Paths, tmp_path: Path
) -> None:
    release = system = f"un-{paths.ns[-6:]}"
    cluster.kubectl("create", "namespace", system)
    cluster.kubectl("label", "namespace", system, "pod-security.kubernetes.io/enforce=restricted")
    helm(
        cluster, "install", release, str(CHART), "-n", system, "--skip-crds",
        "--set", f"fullnameOverride={LONGEST}",
    )  # fmt: skip
    manifest = helm(cluster, "get", "manifest", release, "-n", system)
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    operators = Operators(account_of(cluster, tmp_path, release, system, objects), tmp_path)
    # The API server is sent to the webhook as the chart says, by its Service (elsewhere tests
    # give a loopback URL instead).
    proc = operators(EMBEDDING_PROXY_OPERATOR_WEBHOOK_URL="")
    try:
        configuration = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"

        async def webhooks_written() -> list[Obj] | None:
            return ((await api.get(f"{configuration}/{LONGEST}")) or {}).get("webhooks")

        for hook in await eventually(webhooks_written, "the webhooks configured", timeout=60):
            ref = hook["clientConfig"]["service"]
            assert ref["namespace"] == system
            service = await api.get(f"/api/v1/namespaces/{system}/services/{ref['name']}")
            assert service is not None, f"{hook['name']} points at no Service: {ref}"
            assert ref["port"] in [p["port"] for p in service["spec"]["ports"]]

        before = await api.create(paths.deployments, tei_deployment(paths.ns))
        await api.create(paths.proxies, proxy_object(paths.ns))

        async def injected() -> bool:
            dep = await api.get(f"{paths.deployments}/tei")
            cm = await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}")
            return sidecar(dep) is not None and cm is not None

        await eventually(injected, "the sidecar injected", timeout=60)

        # 1. The EmbeddingProxies, waited for (kubectl waits for the finalizer by default).
        cluster.kubectl("delete", "embeddingproxies", "--all", "-n", paths.ns, "--timeout=120s")
        # 2. The release.
        helm(cluster, "uninstall", release, "-n", system, "--wait")
    finally:
        code = await stop(proc)
        print(operators.logs()[-20000:])
    assert code == 0
    assert "Traceback" not in operators.logs()

    assert await api.items(paths.proxies) == []
    assert await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}") is None
    dep = await api.get(f"{paths.deployments}/tei") or {}
    assert dep["spec"]["template"]["spec"] == before["spec"]["template"]["spec"]
    left = cluster.kubectl(
        "get", "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
        "-o", "name",
        "-l", f"app.kubernetes.io/instance={release}",
    )  # fmt: skip
    assert left.stdout.strip() == ""


async def test_the_documented_recovery_releases_a_stuck_embedding_proxy(
    cluster: ControlPlane, api: Api, paths: Paths
) -> None:
    # As the operator leaves it once it may no longer remove its finalizer (no operator runs).
    stuck = proxy_object(paths.ns)
    stuck["metadata"]["finalizers"] = [names.FINALIZER]
    await api.create(paths.proxies, stuck)
    await api.delete(f"{paths.proxies}/tei")
    assert (await api.get(f"{paths.proxies}/tei") or {})["metadata"].get("deletionTimestamp")

    # The command docs/operator.md gives.
    cluster.kubectl(
        "patch", "embeddingproxy", "tei", "-n", paths.ns, "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}',
    )  # fmt: skip

    async def gone() -> bool:
        return await api.get(f"{paths.proxies}/tei") is None

    await eventually(gone, "the stuck EmbeddingProxy gone")
