"""The GPU rollout trap on a real API server: a Deployment that requests a GPU and rolls with the
API server's default strategy is named by a condition and one Event, which clear when fixed."""

from __future__ import annotations

from typing import Any

from harness import Api, Paths, condition, embedding_proxy, eventually, tei_deployment

from embedding_proxy_operator.logic import rollout
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
TRAP = names.ROLLOUT_NEEDS_SPARE_GPU


async def gpu_condition(api: Api, paths: Paths, status: str) -> Obj | None:
    found = condition(await api.get(f"{paths.proxies}/tei"), TRAP)
    return found if found.get("status") == status else None


async def warnings(api: Api, paths: Paths) -> list[Obj]:
    return [e for e in await api.items(paths.events) if e.get("reason") == TRAP]


async def test_gpu_surge_trap_is_named_and_cleared(api: Api, paths: Paths, operator: Any) -> None:
    dep = tei_deployment(paths.ns, replicas=1)
    (tei,) = dep["spec"]["template"]["spec"]["containers"]
    tei["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    # No strategy given: the API server's default, RollingUpdate with 25% / 25%.
    await api.create(paths.deployments, dep)
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    found = await eventually(lambda: gpu_condition(api, paths, "True"), "the GPU condition")
    assert found["reason"] == "SurgeNeedsSpareGPU"
    assert "nvidia.com/gpu" in found["message"]
    assert "maxSurge 1 and maxUnavailable 0" in found["message"]
    assert rollout.FIX in found["message"]
    (event,) = await eventually(lambda: warnings(api, paths), "a RolloutNeedsSpareGPU event")
    assert event["type"] == "Warning" and event["message"] == found["message"]
    assert event["involvedObject"]["name"] == "tei"

    fix = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    await api.merge(f"{paths.deployments}/tei", {"spec": {"strategy": fix}})
    cleared = await eventually(lambda: gpu_condition(api, paths, "False"), "the trap cleared")
    assert cleared["reason"] == "RolloutFits"
    # The injection and the fix made several reconciliations; the warning was said once.
    assert len(await warnings(api, paths)) == 1

    # Back to a surge (as a GitOps sync of an old manifest would): news again.
    surge = {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    await api.merge(f"{paths.deployments}/tei", {"spec": {"strategy": surge}})
    await eventually(lambda: gpu_condition(api, paths, "True"), "the trap named again")

    async def two() -> list[Obj] | None:
        found = await warnings(api, paths)
        return found if len(found) == 2 else None

    await eventually(two, "a second RolloutNeedsSpareGPU event")
    cr = await api.get(f"{paths.proxies}/tei")
    # Ready does not wait on it: the sidecar is in; whether the pods can roll is the cluster's.
    assert condition(cr, names.SIDECAR_INJECTED)["status"] == "True"
