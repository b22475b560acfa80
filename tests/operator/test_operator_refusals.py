"""What the operator refuses to touch, on the real API server as the chart's ServiceAccount."""

from __future__ import annotations

from typing import Any

from harness import Api, Paths, condition, embedding_proxy, eventually, sidecar, tei_deployment

from embedding_proxy_operator import names

Obj = dict[str, Any]


async def test_a_configmap_it_did_not_create_is_never_taken_over_nor_deleted(
    api: Api, paths: Paths, operator: Any
) -> None:
    cm_name = names.configmap_name("tei")
    theirs = await api.create(
        paths.configmaps,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": cm_name, "namespace": paths.ns, "labels": {"team": "search"}},
            "data": {"theirs": "keep me"},
        },
    )
    original = await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def refused() -> Obj | None:
        cond = condition(await api.get(f"{paths.proxies}/tei"), names.CONFIG_APPLIED)
        return cond if cond.get("reason") == "NameConflict" else None

    cond = await eventually(refused, "ConfigApplied NameConflict", timeout=60)
    assert cond["status"] == "False" and cm_name in cond["message"]
    proxy = await api.get(f"{paths.proxies}/tei")
    assert condition(proxy, names.READY)["status"] == "False"

    async def warned() -> Obj | None:
        for e in await api.items(paths.events):
            if e.get("reason") == "NameConflict" and e.get("type") == "Warning":
                return e
        return None

    await eventually(warned, "a NameConflict Warning event")
    cm = await api.get(f"{paths.configmaps}/{cm_name}")
    assert cm["metadata"].get("labels") == {"team": "search"}
    assert "ownerReferences" not in cm["metadata"]
    assert cm["data"] == {"theirs": "keep me"}
    assert cm["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    # Pods must not mount someone else's config as theirs: the Deployment stays as it was.
    dep = await api.get(f"{paths.deployments}/tei")
    assert sidecar(dep) is None and dep["spec"]["template"] == original["spec"]["template"]

    await api.delete(f"{paths.proxies}/tei")

    async def gone() -> bool:
        return await api.get(f"{paths.proxies}/tei") is None

    await eventually(gone, "the EmbeddingProxy released", timeout=60)
    cm = await api.get(f"{paths.configmaps}/{cm_name}")
    assert cm is not None and cm["data"] == {"theirs": "keep me"}
