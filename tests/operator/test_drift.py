"""What the operator owns, changed by hand, is put back at once, on the real API server: the
ConfigMap edited to broken YAML (touching nothing else the operator watches) and deleted; the
KEDA ScaledObject edited and deleted; the admission webhook's configuration edited, and filled in
when made again after a deletion. A Warning Event names who changed it (its managedFields)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from harness import Api, Paths, embedding_proxy, eventually, tei_deployment
from installed import Account, webhook_env
from tests.helpers.processes import free_port

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


# ---- the KEDA ScaledObject -------------------------------------------------------------------

SO = names.scaled_object_name("tei")
# The daemon's own poll would put it back only this long after (the guarantee is "at once").
SLOW_POLL = 300


async def repairs(api: Api, paths: Paths, reason: str) -> list[str]:
    return [
        e.get("message", "")
        for e in await api.items(paths.events)
        if e.get("reason") == reason and e.get("type") == "Warning"
    ]


async def test_a_scaled_object_edited_or_deleted_by_hand_is_put_back_at_once(
    api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    autoscaling = {"enabled": True, "provider": "KEDA", "maxReplicas": 6, "pollSeconds": SLOW_POLL}
    await api.create(paths.proxies, embedding_proxy(paths.ns, autoscaling=autoscaling))
    path = f"{paths.scaled_objects}/{SO}"

    async def named_in_status() -> bool:  # what tells a deletion from a first write
        proxy = await api.get(f"{paths.proxies}/tei") or {}
        return ((proxy.get("status") or {}).get("autoscaling") or {}).get("scaledObjectName") == SO

    await eventually(named_in_status, "the ScaledObject named in status")
    good = (await api.get(path) or {})["spec"]
    assert good["maxReplicaCount"] == 6

    # Fewer replicas and a field of its own, as `kubectl edit` writes them.
    edit = {"spec": {"maxReplicaCount": 1, "cooldownPeriod": 30}}
    await api.call(
        "PATCH", path, edit, "application/merge-patch+json", params={"fieldManager": "kubectl-edit"}
    )
    began = time.monotonic()

    async def as_written() -> Obj | None:
        obj = await api.get(path)
        return obj if obj is not None and obj["spec"] == good else None

    await eventually(as_written, "the ScaledObject put back after an edit", timeout=REPAIR_WITHIN)
    took_edit = time.monotonic() - began
    said = await eventually(
        lambda: repairs(api, paths, "ScaledObjectRepaired"), "a ScaledObjectRepaired event"
    )
    assert any(f"ScaledObject '{SO}' was changed by kubectl-edit (Update" in m for m in said), said

    uid = (await api.get(path) or {})["metadata"]["uid"]
    await api.delete(path)
    began = time.monotonic()

    async def made_anew() -> Obj | None:
        obj = await api.get(path)
        return obj if obj is not None and obj["metadata"]["uid"] != uid else None

    again = await eventually(made_anew, "the ScaledObject put back", timeout=REPAIR_WITHIN)
    took_delete = time.monotonic() - began
    assert again["spec"] == good

    async def said_so_deleted() -> bool:
        found = await repairs(api, paths, "ScaledObjectRepaired")
        return any("was deleted: put back" in m for m in found)

    await eventually(said_so_deleted, "the deletion named in an event")
    print(
        f"ScaledObject put back {took_edit:.2f} s after an edit, {took_delete:.2f} s after deletion"
    )

    # The operator's own change is no repair.
    before = len(await repairs(api, paths, "ScaledObjectRepaired"))
    await api.merge(f"{paths.proxies}/tei", {"spec": {"autoscaling": {"maxReplicas": 8}}})

    async def rewritten() -> bool:
        return ((await api.get(path) or {}).get("spec") or {}).get("maxReplicaCount") == 8

    await eventually(rewritten, "the change of the EmbeddingProxy in the ScaledObject")
    assert len(await repairs(api, paths, "ScaledObjectRepaired")) == before


# ---- the admission webhook's configuration ---------------------------------------------------

CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


async def cluster_warnings(api: Api, reason: str) -> list[Obj]:
    """Events about the (cluster-scoped) configuration, wherever they were posted."""
    return [
        e
        for e in await api.items("/api/v1/events", fieldSelector=f"reason={reason}")
        if e.get("type") == "Warning"
    ]


async def test_the_webhook_configuration_edited_by_hand_is_put_back_and_filled_in_when_made_again(
    api: Api, operator: Any, cluster_account: Account
) -> None:
    port = free_port()
    operator(**webhook_env(port))
    name = cluster_account.env["EMBEDDING_PROXY_OPERATOR_WEBHOOK_CONFIGURATION"]
    path = f"{CONFIGURATIONS}/{name}"
    url = f"https://127.0.0.1:{port}/"

    def hooks_of(obj: Obj | None) -> list[Obj]:
        return list((obj or {}).get("webhooks") or [])

    async def published() -> Obj | None:
        obj = await api.get(path)
        hooks = hooks_of(obj)
        ok = hooks and all(h["clientConfig"].get("url", "").startswith(url) for h in hooks)
        return obj if ok else None

    written = await eventually(published, f"the webhook configured at port {port}", timeout=60)
    good = hooks_of(written)
    repaired_before = len(await cluster_warnings(api, "WebhookConfigurationRepaired"))

    # Pods sent to a dead port, and refused while it does not answer, as `kubectl edit` writes.
    dead = f"https://127.0.0.1:{free_port()}/pods"
    broken = [
        {
            **good[0],
            "failurePolicy": "Fail",
            "clientConfig": {**good[0]["clientConfig"], "url": dead},
        },
        *good[1:],
    ]
    await api.call(
        "PATCH",
        path,
        {"webhooks": broken},
        "application/merge-patch+json",
        params={"fieldManager": "kubectl-edit"},
    )
    began = time.monotonic()

    async def as_written() -> bool:
        return hooks_of(await api.get(path)) == good

    await eventually(as_written, "the configuration put back after an edit", timeout=REPAIR_WITHIN)
    took_edit = time.monotonic() - began

    async def said() -> list[str]:
        found = await cluster_warnings(api, "WebhookConfigurationRepaired")
        return [e["message"] for e in found[repaired_before:]]

    messages = await eventually(said, "a WebhookConfigurationRepaired event")
    assert any(
        f"MutatingWebhookConfiguration '{name}' was changed by kubectl-edit (Update" in m
        for m in messages
    ), messages

    # Deleted (as `helm uninstall` deletes it first): not made again by the operator, which
    # says so; made again (`helm upgrade`), it is filled in at once.
    chart_made = {k: written[k] for k in ("apiVersion", "kind")}
    chart_made["metadata"] = {"name": name, "labels": written["metadata"].get("labels") or {}}
    await api.delete(path)
    try:

        async def said_deleted() -> bool:
            return any(
                f"'{name}' was deleted" in e.get("message", "")
                for e in await cluster_warnings(api, "WebhookConfigurationDeleted")
            )

        await eventually(said_deleted, "the deletion named in an event", timeout=REPAIR_WITHIN)
        assert await api.get(path) is None
    finally:
        await api.create(CONFIGURATIONS, chart_made)
    began = time.monotonic()

    def without_bundle(hooks: list[Obj]) -> list[Obj]:
        # The bundle made anew holds this operator's CA only, no longer earlier tests' ones.
        return [
            {**h, "clientConfig": {k: v for k, v in h["clientConfig"].items() if k != "caBundle"}}
            for h in hooks
        ]

    async def filled_in() -> bool:
        return without_bundle(hooks_of(await api.get(path))) == without_bundle(good)

    await eventually(filled_in, "the configuration made again filled in", timeout=REPAIR_WITHIN)
    took_create = time.monotonic() - began
    print(
        f"webhook configuration put back {took_edit:.2f} s after an edit, filled in "
        f"{took_create:.2f} s after it was made again"
    )
