"""A sidecar the API server refuses to put into pods, past the CRD and the operator's own rules:
here a LimitRange of the namespace (at most 1 CPU a container; the sidecar's limit is 2). The
real ReplicaSet controller reports it (the Deployment's ReplicaFailure); the EmbeddingProxy says
so in a condition, in Ready and in one Warning Event, and clears it once the cause is gone."""

from __future__ import annotations

from typing import Any

from harness import Api, Paths, condition, embedding_proxy, eventually, sidecar, tei_deployment
from tests.helpers.control_plane import ControlPlane

from embedding_proxy_operator.logic import replica_failure
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
REFUSAL = "maximum cpu usage per Container is 1, but limit is 2"


async def events(api: Api, paths: Paths, reason: str) -> list[Obj]:
    return [e for e in await api.items(paths.events) if e.get("reason") == reason]


async def test_pods_the_api_server_refuses_are_reported_until_it_takes_them(
    api: Api, paths: Paths, operator: Any, cluster: ControlPlane
) -> None:
    limit_ranges = f"/api/v1/namespaces/{paths.ns}/limitranges"
    await api.create(
        limit_ranges,
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "one-cpu"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]},
        },
    )
    # One replica, so that its ReplicaSet creates a pod (no kubelet runs it: it stays Pending).
    await api.create(paths.deployments, tei_deployment(paths.ns, replicas=1))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def failing() -> Obj | None:
        cond = condition(await api.get(f"{paths.proxies}/tei"), names.REPLICA_FAILURE)
        return cond if cond.get("status") == "True" else None

    cond = await eventually(failing, "ReplicaFailure True on the EmbeddingProxy", timeout=120)
    assert cond["reason"] == "FailedCreate" and REFUSAL in cond["message"]
    proxy = await api.get(f"{paths.proxies}/tei")
    injected = condition(proxy, names.SIDECAR_INJECTED)
    assert injected["status"] == "False" and injected["reason"] == replica_failure.NOT_CREATED
    assert REFUSAL in injected["message"]
    ready = condition(proxy, names.READY)
    assert (ready["status"], ready["reason"]) == ("False", replica_failure.NOT_CREATED)
    # The sidecar is in the template all the while: the operator did its part.
    assert sidecar(await api.get(f"{paths.deployments}/tei")) is not None

    # What a user sees.
    wide = cluster.kubectl("get", "eproxy", "tei", "-n", paths.ns, "-o", "wide").stdout
    assert "False" in wide and replica_failure.NOT_CREATED in wide, wide

    async def warned() -> list[Obj]:
        found = await events(api, paths, names.REPLICA_FAILURE)
        return [e for e in found if e.get("type") == "Warning"]

    (warning,) = await eventually(warned, "a ReplicaFailure Warning Event")
    assert REFUSAL in warning["message"]

    await api.delete(f"{limit_ranges}/one-cpu")

    async def cleared() -> Obj | None:
        proxy = await api.get(f"{paths.proxies}/tei")
        cond = condition(proxy, names.REPLICA_FAILURE)
        return proxy if cond.get("status") == "False" else None

    # The ReplicaSet controller retries with a growing backoff: allow it time.
    proxy = await eventually(cleared, "ReplicaFailure cleared", timeout=180)
    assert condition(proxy, names.REPLICA_FAILURE)["reason"] == "NoFailure"
    assert condition(proxy, names.SIDECAR_INJECTED)["status"] == "True"
    assert condition(proxy, names.READY)["reason"] != replica_failure.NOT_CREATED

    async def news() -> list[Obj]:
        return await events(api, paths, replica_failure.CLEARED)

    (done,) = await eventually(news, "a ReplicaFailureCleared Event")
    assert done["type"] == "Normal"
    # Many Deployment events came in between: the Warning was posted once.
    assert len(await warned()) == 1
