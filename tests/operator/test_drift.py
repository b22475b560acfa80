"""What the operator owns, changed by hand, is put back at once: the ConfigMap edited to broken
YAML (touching nothing else the operator watches), and the ConfigMap deleted, on the real API
server; a Warning Event names who changed it (its managedFields)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from harness import Api, Paths, embedding_proxy, eventually, tei_deployment

from embedding_proxy_operator.model import names

Obj = dict[str, Any]
CM = names.configmap_name("tei")
# Seconds a repair may take on a slow, shared machine; it takes well under one (printed).
REPAIR_WITHIN = 10.0


async def config(api: Api, paths: Paths) -> str | None:
    cm = await api.get(f"{paths.configmaps}/{CM}")
    return None if cm is None else str(cm["data"][names.CONFIG_KEY])


async def repaired(api: Api, paths: Paths, good: str, what: str) -> float:
    began = time.monotonic()

    async def back() -> bool:
        return await config(api, paths) == good

    await eventually(back, f"the ConfigMap put back after {what}", timeout=REPAIR_WITHIN)
    return time.monotonic() - began


async def warnings(api: Api, paths: Paths) -> list[str]:
    return [
        e.get("message", "")
        for e in await api.items(paths.events)
        if e.get("reason") == "ConfigMapRepaired" and e.get("type") == "Warning"
    ]


async def test_a_configmap_edited_or_deleted_by_hand_is_put_back_at_once(
    api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    good = await eventually(lambda: config(api, paths), "the ConfigMap")
    assert yaml.safe_load(good)["batching"]

    async def recorded() -> bool:  # status names the config written: what is put back
        proxy = await api.get(f"{paths.proxies}/tei") or {}
        return bool((proxy.get("status") or {}).get("configVersion"))

    await eventually(recorded, "the config version in status")

    # Broken YAML and a file of its own beside it, written as `kubectl edit` writes (its field
    # manager), and nothing else touched.
    broken = {"data": {names.CONFIG_KEY: "batching: [unclosed\n", "extra.yaml": "x: 1\n"}}
    await api.call(
        "PATCH",
        f"{paths.configmaps}/{CM}",
        broken,
        "application/merge-patch+json",
        params={"fieldManager": "kubectl-edit"},
    )
    took_edit = await repaired(api, paths, good, "an edit")
    cm = await api.get(f"{paths.configmaps}/{CM}") or {}
    assert set(cm["data"]) == {names.CONFIG_KEY}  # the key added by hand is gone too
    said = await eventually(lambda: warnings(api, paths), "a ConfigMapRepaired event")
    assert any(f"ConfigMap '{CM}' was changed by kubectl-edit (Update" in m for m in said), said

    await api.delete(f"{paths.configmaps}/{CM}")
    took_delete = await repaired(api, paths, good, "its deletion")

    async def said_deleted() -> bool:
        return any("was deleted: put back" in m for m in await warnings(api, paths))

    await eventually(said_deleted, "the deletion named in an event")
    print(f"ConfigMap put back {took_edit:.2f} s after an edit, {took_delete:.2f} s after deletion")

    # The operator's own writes are not drift: a change of the EmbeddingProxy is no repair.
    before = len(await warnings(api, paths))
    await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": 8}}})

    async def rewritten() -> bool:
        return "max_batch_size: 8" in (await config(api, paths) or "")

    await eventually(rewritten, "the change of the EmbeddingProxy in the ConfigMap")
    assert len(await warnings(api, paths)) == before
