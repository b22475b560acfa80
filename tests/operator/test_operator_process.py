"""The operator as a real process, as the chart's ServiceAccount, against the real API server:
what a user sees in the cluster after each thing they do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from harness import (
    Api,
    Kubelet,
    Paths,
    condition,
    embedding_proxy,
    eventually,
    pod_spec,
    sidecar,
    start_proxy,
    stop_process,
    tei_deployment,
)
from tests.helpers.processes import free_port

from embedding_proxy.config.settings import Config
from embedding_proxy_operator.model import names

Obj = dict[str, Any]


async def injected(api: Api, paths: Paths, name: str = "tei") -> Obj:
    async def probe() -> Obj | None:
        dep = await api.get(f"{paths.deployments}/{name}")
        return dep if sidecar(dep) else None

    return await eventually(probe, f"the sidecar in Deployment {name}")


async def config_of(api: Api, paths: Paths, proxy_name: str = "tei") -> Obj | None:
    cm = await api.get(f"{paths.configmaps}/{names.configmap_name(proxy_name)}")
    return yaml.safe_load(cm["data"][names.CONFIG_KEY]) if cm else None


async def event_reasons(api: Api, paths: Paths) -> set[str]:
    return {e.get("reason", "") for e in await api.items(paths.events)}


async def test_create_puts_configmap_and_native_sidecar_into_the_deployment(
    api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns, batching={"maxBatchSize": 64}))

    dep = await injected(api, paths)
    side = sidecar(dep)
    assert side is not None and side["restartPolicy"] == "Always"
    assert side["args"] == ["serve", "--config", "/etc/embedding-proxy/config.yaml"]
    assert [c["name"] for c in pod_spec(dep)["containers"]] == ["tei"]
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert volumes[names.CONFIG_VOLUME]["configMap"]["name"] == "tei-embedding-proxy"
    assert "data" in volumes
    assert dep["spec"]["replicas"] == 0  # never the operator's to set

    config = await eventually(lambda: config_of(api, paths), "the ConfigMap")
    parsed = Config.model_validate(config)
    assert parsed.batching.max_batch_size == 64
    assert parsed.server.metrics_port == 9464
    assert parsed.upstream.url == "http://127.0.0.1:80"

    async def status() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        ok = condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
        return cr if ok and cr["status"].get("configVersion") == config["version"] else None

    cr = await eventually(status, "status of the EmbeddingProxy")
    assert condition(cr, names.TARGET_FOUND)["status"] == "True"
    assert cr["status"]["sidecarMode"] == "Native"
    assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    assert "SidecarInjected" in await eventually(
        lambda: _reason_seen(api, paths, "SidecarInjected"), "a SidecarInjected event"
    )


async def test_batching_change_rewrites_the_configmap_and_leaves_pods_alone(
    api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    template = (await injected(api, paths))["spec"]["template"]
    first = await eventually(lambda: config_of(api, paths), "the ConfigMap")

    lanes = [{"name": "search", "minShare": 0}, {"name": "indexing", "minShare": 0.2}]
    batching = {"maxWaitMilliseconds": 20, "lanes": lanes, "defaultLane": "indexing"}
    await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": batching}})

    async def rewritten() -> Obj | None:
        config = await config_of(api, paths)
        return config if config and config["batching"]["max_wait_ms"] == 20 else None

    second = await eventually(rewritten, "the new batching settings in the ConfigMap")
    assert second["version"] != first["version"]
    loaded = Config.model_validate(second).batching
    assert [(lane.name, lane.min_share) for lane in loaded.lane_list] == [
        ("search", 0.0),
        ("indexing", 0.2),
    ]
    assert loaded.default_lane == "indexing"

    async def reported() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        return cr if cr["status"].get("configVersion") == second["version"] else None

    await eventually(reported, "the new config version in status")
    dep = await api.get(f"{paths.deployments}/tei")
    assert dep["spec"]["template"] == template


async def test_image_change_rolls_the_pod_template(api: Api, paths: Paths, operator: Any) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    await injected(api, paths)

    await api.merge(
        f"{paths.proxies}/tei", {"spec": {"sidecar": {"image": "embedding-proxy:0.2.0"}}}
    )

    async def rolled() -> Obj | None:
        side = sidecar(await api.get(f"{paths.deployments}/tei"))
        return side if side and side["image"] == "embedding-proxy:0.2.0" else None

    await eventually(rolled, "the new image in the pod template")
    dep = await api.get(f"{paths.deployments}/tei")
    assert len(pod_spec(dep)["initContainers"]) == 1


async def test_deployment_created_after_its_proxy_gets_the_sidecar(
    api: Api, paths: Paths, operator: Any
) -> None:
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def missing() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        found = condition(cr, names.TARGET_FOUND)
        return found if found.get("reason") == "TargetNotFound" else None

    found = await eventually(missing, "the TargetFound=False condition")
    assert found["status"] == "False"
    assert "'tei' does not exist" in found["message"]
    ready = condition(await api.get(f"{paths.proxies}/tei"), names.READY)
    assert ready["status"] == "False" and ready["reason"] == "TargetNotFound"

    await api.create(paths.deployments, tei_deployment(paths.ns))
    await injected(api, paths)

    async def found_now() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        return cr if condition(cr, names.TARGET_FOUND).get("status") == "True" else None

    await eventually(found_now, "TargetFound=True")


async def test_sidecar_removed_by_hand_comes_back(api: Api, paths: Paths, operator: Any) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    dep = await injected(api, paths)
    # Wait until status records the injection, so the restore is told apart from a first one.
    await eventually(
        lambda: _condition_is(api, paths, names.SIDECAR_INJECTED, "True"), "SidecarInjected=True"
    )

    await api.json_patch(
        f"{paths.deployments}/tei",
        [
            {"op": "remove", "path": "/spec/template/spec/initContainers"},
            {"op": "add", "path": "/metadata/labels", "value": {"touched": "by-hand"}},
        ],
    )
    restored = await injected(api, paths)
    assert sidecar(restored) == sidecar(dep)
    assert "SidecarRestored" in await eventually(
        lambda: _reason_seen(api, paths, "SidecarRestored"), "a SidecarRestored event"
    )


async def _condition_is(api: Api, paths: Paths, type_: str, status: str) -> bool:
    return condition(await api.get(f"{paths.proxies}/tei"), type_).get("status") == status


async def _reason_seen(api: Api, paths: Paths, reason: str) -> set[str] | None:
    reasons = await event_reasons(api, paths)
    return reasons if reason in reasons else None


async def test_delete_gives_the_deployment_back_as_it_was(
    api: Api, paths: Paths, operator: Any
) -> None:
    original = await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    await injected(api, paths)
    await eventually(lambda: config_of(api, paths), "the ConfigMap")

    await api.delete(f"{paths.proxies}/tei")

    async def released() -> Obj | None:
        dep = await api.get(f"{paths.deployments}/tei")
        return dep if sidecar(dep) is None and sidecar(dep, "containers") is None else None

    dep = await eventually(released, "the sidecar gone from the Deployment")
    assert dep["spec"]["template"] == original["spec"]["template"]
    assert names.PROXY_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert await eventually(
        lambda: _gone(api, f"{paths.configmaps}/{names.configmap_name('tei')}"), "ConfigMap deleted"
    )
    assert await eventually(lambda: _gone(api, f"{paths.proxies}/tei"), "the finalizer released")


async def _gone(api: Api, path: str) -> bool:
    return await api.get(path) is None


# Rounds of the race: before the fix, one round in five passed.
ROUNDS = 3


async def test_deleting_three_proxies_of_one_deployment_at_once_gives_it_back_as_it_was(
    api: Api, paths: Paths, operator: Any
) -> None:
    """One of them injected the Deployment, the others stand back (TargetClaimed). Deleted at
    once, the first takes its sidecar out; the others, reading the Deployment after that, must
    not take the pods that still run its sidecar (its old ReplicaSet's, until the new one's are
    ready: here, with no kubelet, for good) for pods of their own and roll the Deployment once
    more with `kubectl.kubernetes.io/restartedAt`; nor may a removal whose `test` of the
    resourceVersion failed (the Deployment changed meanwhile) be given up as invalid."""
    original = await api.create(paths.deployments, tei_deployment(paths.ns, replicas=1))
    operator()
    proxies = ["tei", "tei-b", "tei-c"]

    async def claimed() -> bool:  # every one reconciled: the others stand back
        reasons = []
        for name in proxies:
            cr = await api.get(f"{paths.proxies}/{name}")
            reasons.append(condition(cr, names.SIDECAR_INJECTED).get("reason"))
        return reasons.count("TargetClaimed") == 2

    async def pod_with_sidecar() -> bool:
        return any(
            c["name"] == names.SIDECAR_NAME
            for p in await api.items(paths.pods)
            for c in p["spec"].get("initContainers") or []
        )

    async def all_released() -> bool:
        return not await api.items(paths.proxies)

    for _ in range(ROUNDS):
        for name in proxies:
            await api.create(paths.proxies, embedding_proxy(paths.ns, name=name))
        await injected(api, paths)
        await eventually(claimed, "two EmbeddingProxies standing back")
        await eventually(pod_with_sidecar, "a pod of the injected template")
        await asyncio.gather(*(api.delete(f"{paths.proxies}/{n}") for n in proxies))
        await eventually(all_released, "every finalizer released", timeout=60)
        dep = await api.get(f"{paths.deployments}/tei") or {}
        assert dep["spec"]["template"] == original["spec"]["template"]
        assert names.PROXY_ANNOTATION not in (dep["metadata"].get("annotations") or {})


async def test_port_conflict_is_reported_and_the_deployment_left_alone(
    api: Api, paths: Paths, operator: Any
) -> None:
    original = await api.create(paths.deployments, tei_deployment(paths.ns, port=8000))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def refused() -> Obj | None:
        cond = condition(await api.get(f"{paths.proxies}/tei"), names.SIDECAR_INJECTED)
        return cond if cond.get("reason") == "PortConflict" else None

    cond = await eventually(refused, "the PortConflict condition")
    assert cond["status"] == "False"
    assert "8000" in cond["message"] and "spec.sidecar.ports.api" in cond["message"]
    dep = await api.get(f"{paths.deployments}/tei")
    assert dep["spec"]["template"] == original["spec"]["template"]

    # Choosing another port resolves it.
    await api.merge(f"{paths.proxies}/tei", {"spec": {"sidecar": {"ports": {"api": 8080}}}})
    dep = await injected(api, paths)
    assert sidecar(dep)["ports"][0]["containerPort"] == 8080
    assert (await config_of(api, paths))["server"]["port"] == 8080


async def test_without_native_sidecars_the_proxy_is_a_regular_container(
    api: Api, paths: Paths, operator: Any
) -> None:
    # What a cluster before 1.29 gets (the version check itself is a unit test's).
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator(EMBEDDING_PROXY_OPERATOR_NATIVE_SIDECARS="false")
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def as_container() -> Obj | None:
        return sidecar(await api.get(f"{paths.deployments}/tei"), "containers")

    side = await eventually(as_container, "the sidecar among the containers")
    assert "restartPolicy" not in side
    assert "NativeSidecarUnsupported" in await eventually(
        lambda: _reason_seen(api, paths, "NativeSidecarUnsupported"), "a warning event"
    )


async def test_secrets_are_mounted_and_never_copied(api: Api, paths: Paths, operator: Any) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    auth = {
        "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
        "upstreamApiKeySecretRef": {"name": "tei-key", "key": "token"},
    }
    await api.create(paths.proxies, embedding_proxy(paths.ns, auth=auth))
    dep = await injected(api, paths)
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert volumes[names.API_KEYS_VOLUME]["secret"] == {
        "secretName": "client-keys",
        "items": [{"key": "keys", "path": "api-keys"}],
        "defaultMode": 0o644,  # the API server's default
    }
    assert volumes[names.UPSTREAM_KEY_VOLUME]["secret"]["secretName"] == "tei-key"
    config = await eventually(lambda: config_of(api, paths), "the ConfigMap")
    assert config["auth"] == {"api_keys_file": "/etc/embedding-proxy-secrets/api-keys/api-keys"}
    assert config["upstream"]["api_key_file"] == "/etc/embedding-proxy-secrets/upstream-key/api-key"

    # Dropping a reference unmounts its Secret.
    await api.merge(f"{paths.proxies}/tei", {"spec": {"auth": {"apiKeysSecretRef": None}}})

    async def unmounted() -> Obj | None:
        dep = await api.get(f"{paths.deployments}/tei")
        vols = {v["name"] for v in pod_spec(dep)["volumes"]}
        return dep if names.API_KEYS_VOLUME not in vols else None

    dep = await eventually(unmounted, "the client-keys volume gone")
    mounts = {m["name"] for m in sidecar(dep)["volumeMounts"]}
    assert mounts == {names.CONFIG_VOLUME, names.UPSTREAM_KEY_VOLUME}


async def test_status_counts_pods_whose_proxy_runs_the_current_config(
    api: Api,
    paths: Paths,
    operator: Any,
    kubelet: Callable[[list[str]], Kubelet],
    tmp_path: Path,
) -> None:
    """A real proxy process stands in for the pod's sidecar: the pod's IP is loopback, and the
    test plays the kubelet, copying the ConfigMap into the file the proxy watches."""
    api_port, metrics_port = free_port(), free_port()
    await api.create(paths.deployments, tei_deployment(paths.ns, replicas=1))
    operator()
    sidecar_spec = {"ports": {"api": api_port, "metrics": metrics_port}}
    await api.create(paths.proxies, embedding_proxy(paths.ns, sidecar=sidecar_spec))
    await injected(api, paths)
    config_file = tmp_path / "config.yaml"

    def project(config: Obj) -> None:
        local = {**config, "server": {**config["server"], "host": "127.0.0.1"}}
        config_file.write_text(yaml.safe_dump(local))

    first = await eventually(lambda: config_of(api, paths), "the ConfigMap")
    project(first)
    sidecar_process = start_proxy(config_file, metrics_port, tmp_path / "proxy.log")
    try:
        # Every pod the ReplicaSet controller makes runs here (the rollout's old and new pods
        # alike), so the one proxy answers for whichever pod is ready.
        kubelet(["127.0.0.1"] * 4)

        async def counted(version: str) -> Obj | None:
            cr = await api.get(f"{paths.proxies}/tei")
            status = cr.get("status", {})
            ok = (
                status.get("podsReady") == 1
                and status.get("readyReplicas") == 1  # the rollout's old pod gone
                and status.get("podsOnConfigVersion") == 1
                and status.get("configVersion") == version
            )
            return cr if ok and condition(cr, names.CONFIG_APPLIED)["status"] == "True" else None

        cr = await eventually(lambda: counted(first["version"]), "the pod counted on the config")
        assert condition(cr, names.READY)["status"] == "True"

        await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": 7}}})

        async def rolling() -> Obj | None:
            cr = await api.get(f"{paths.proxies}/tei")
            return cr if condition(cr, names.CONFIG_APPLIED).get("reason") == "Rolling" else None

        await eventually(rolling, "ConfigApplied=False while the pod runs the old config")
        second = await config_of(api, paths)
        project(second)
        await eventually(lambda: counted(second["version"]), "the pod counted on the new config")

        # The file the pod is given turns to broken YAML (an edit of the ConfigMap that the
        # kubelet projected before the operator put it back): the proxy keeps serving the
        # current version, but its file is not what it runs.
        config_file.write_text("batching: [unclosed\n")

        async def failed_to_load() -> Obj | None:
            cr = await api.get(f"{paths.proxies}/tei")
            applied = condition(cr, names.CONFIG_APPLIED)
            said = "failed to load its config file since" in applied.get("message", "")
            return cr if applied.get("status") == "False" and said else None

        cr = await eventually(failed_to_load, "ConfigApplied=False naming the failed reload")
        assert cr["status"]["podsOnConfigVersion"] == 0
        project(second)  # put back, and loaded
        await eventually(lambda: counted(second["version"]), "the pod counted again")
    finally:
        stop_process(sidecar_process)
