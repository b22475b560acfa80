"""Sidecar resources written in a form the API server stores otherwise ("0.5" as "500m"): no
reason to patch the Deployment again, on the real API server."""

from __future__ import annotations

import asyncio
from typing import Any

from harness import Api, Paths, embedding_proxy, eventually, sidecar, tei_deployment
from installed import Account
from tests.helpers.control_plane import ControlPlane

WRITTEN = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def operator_calls(cluster: ControlPlane, account: Account, ns: str, verb: str) -> int:
    """The operator's requests of `verb` on the Deployment `tei` in `ns`."""
    return sum(
        1
        for e in cluster.audit_events(account.username)
        if e["verb"] == verb
        # Logged before the request is served: counted as soon as its effect can be seen.
        and e.get("stage") == "RequestReceived"
        and (e.get("objectRef") or {}).get("resource") == "deployments"
        and (e.get("objectRef") or {}).get("namespace") == ns
        and (e.get("objectRef") or {}).get("name") == "tei"
    )


async def test_unrelated_deployment_edits_do_not_repatch_canonical_resources(
    cluster: ControlPlane, cluster_account: Account, api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns, sidecar={"resources": WRITTEN}))

    async def injected() -> dict[str, Any] | None:
        dep = await api.get(f"{paths.deployments}/tei")
        side = sidecar(dep)
        return side["resources"] if side else None

    stored = await eventually(injected, "the sidecar in Deployment tei")
    assert stored["requests"]["cpu"] == "500m" and stored["requests"]["memory"] == "1Gi"

    async def read_again(count: int) -> bool:
        await asyncio.sleep(1)  # the audit log is the session's: read it less often
        return operator_calls(cluster, cluster_account, paths.ns, "get") > count

    patched = operator_calls(cluster, cluster_account, paths.ns, "patch")
    for i in range(3):
        # Each edit is a Deployment event: wait until the operator has read the Deployment for
        # it, so that it has finished with the edit before.
        reads = operator_calls(cluster, cluster_account, paths.ns, "get")
        await api.merge(f"{paths.deployments}/tei", {"metadata": {"annotations": {"edit": str(i)}}})
        await eventually(lambda n=reads: read_again(n), f"the operator reading edit {i}")
    assert operator_calls(cluster, cluster_account, paths.ns, "patch") == patched
    assert not [e for e in await api.items(paths.events) if e.get("reason") == "SidecarUpdated"]
