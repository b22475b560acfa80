"""The operator as a real process against an emulated Kubernetes API over HTTP: what a user sees
in the cluster after each thing they do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from harness import (
    Api,
    Cluster,
    condition,
    eventually,
    pod_spec,
    ready_pod,
    sidecar,
    start_proxy,
    stop_process,
)
from tests.helpers.processes import free_port

from embedding_proxy.config import Config
from embedding_proxy_operator import names

NS = "demo"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
PROXIES = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
EVENTS = f"/api/v1/namespaces/{NS}/events"

Obj = dict[str, Any]


def tei_deployment(name: str = "tei", port: int = 80) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "tei",
                            "image": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5",
                            "args": ["--model-id", "BAAI/bge-small-en-v1.5"],
                            "ports": [{"name": "http", "containerPort": port}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def proxy(name: str = "tei", target: str = "tei", **spec: Any) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetRef": {"name": target}, **spec},
    }


async def injected(api: Api, name: str = "tei") -> Obj:
    async def probe() -> Obj | None:
        dep = await api.get(f"{DEPLOYMENTS}/{name}")
        return dep if sidecar(dep) else None

    return await eventually(probe, f"the sidecar in Deployment {name}")


async def config_of(api: Api, proxy_name: str = "tei") -> Obj | None:
    cm = await api.get(f"{CONFIGMAPS}/{names.configmap_name(proxy_name)}")
    return yaml.safe_load(cm["data"][names.CONFIG_KEY]) if cm else None


async def event_reasons(api: Api) -> set[str]:
    return {e.get("reason", "") for e in await api.items(EVENTS)}


async def test_create_puts_configmap_and_native_sidecar_into_the_deployment(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy(batching={"maxBatchSize": 64}))

    dep = await injected(api)
    side = sidecar(dep)
    assert side is not None and side["restartPolicy"] == "Always"
    assert side["args"] == ["serve", "--config", "/etc/embedding-proxy/config.yaml"]
    assert [c["name"] for c in pod_spec(dep)["containers"]] == ["tei"]
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert volumes[names.CONFIG_VOLUME]["configMap"]["name"] == "tei-embedding-proxy"
    assert "data" in volumes
    assert dep["spec"]["replicas"] == 2

    config = await eventually(lambda: config_of(api), "the ConfigMap")
    parsed = Config.model_validate(config)
    assert parsed.batching.max_batch_size == 64
    assert parsed.server.metrics_port == 9464
    assert parsed.upstream.url == "http://127.0.0.1:80"

    async def status() -> Obj | None:
        cr = await api.get(f"{PROXIES}/tei")
        ok = condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
        return cr if ok and cr["status"].get("configVersion") == config["version"] else None

    cr = await eventually(status, "status of the EmbeddingProxy")
    assert condition(cr, names.TARGET_FOUND)["status"] == "True"
    assert cr["status"]["sidecarMode"] == "Native"
    assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    assert "SidecarInjected" in await eventually(lambda: event_reasons(api), "events")


async def test_batching_change_rewrites_the_configmap_and_leaves_pods_alone(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy())
    template = (await injected(api))["spec"]["template"]
    first = await eventually(lambda: config_of(api), "the ConfigMap")

    await api.merge(f"{PROXIES}/tei", {"spec": {"batching": {"maxWaitMilliseconds": 20}}})

    async def rewritten() -> Obj | None:
        config = await config_of(api)
        return config if config and config["batching"]["max_wait_ms"] == 20 else None

    second = await eventually(rewritten, "the new batching settings in the ConfigMap")
    assert second["version"] != first["version"]
    Config.model_validate(second)

    async def reported() -> Obj | None:
        cr = await api.get(f"{PROXIES}/tei")
        return cr if cr["status"].get("configVersion") == second["version"] else None

    await eventually(reported, "the new config version in status")
    dep = await api.get(f"{DEPLOYMENTS}/tei")
    assert dep["spec"]["template"] == template


async def test_image_change_rolls_the_pod_template(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy())
    await injected(api)

    await api.merge(f"{PROXIES}/tei", {"spec": {"sidecar": {"image": "embedding-proxy:0.2.0"}}})

    async def rolled() -> Obj | None:
        side = sidecar(await api.get(f"{DEPLOYMENTS}/tei"))
        return side if side and side["image"] == "embedding-proxy:0.2.0" else None

    await eventually(rolled, "the new image in the pod template")
    dep = await api.get(f"{DEPLOYMENTS}/tei")
    assert len(pod_spec(dep)["initContainers"]) == 1


async def test_deployment_created_after_its_proxy_gets_the_sidecar(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    operator()
    await api.create(PROXIES, proxy())

    async def missing() -> Obj | None:
        cr = await api.get(f"{PROXIES}/tei")
        found = condition(cr, names.TARGET_FOUND)
        return found if found.get("reason") == "TargetNotFound" else None

    found = await eventually(missing, "the TargetFound=False condition")
    assert found["status"] == "False"
    assert "'tei' does not exist" in found["message"]
    ready = condition(await api.get(f"{PROXIES}/tei"), names.READY)
    assert ready["status"] == "False" and ready["reason"] == "TargetNotFound"

    await api.create(DEPLOYMENTS, tei_deployment())
    await injected(api)

    async def found_now() -> Obj | None:
        cr = await api.get(f"{PROXIES}/tei")
        return cr if condition(cr, names.TARGET_FOUND).get("status") == "True" else None

    await eventually(found_now, "TargetFound=True")


async def test_sidecar_removed_by_hand_comes_back(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy())
    dep = await injected(api)
    # Wait until status records the injection, so the restore is told apart from a first one.
    await eventually(
        lambda: _condition_is(api, names.SIDECAR_INJECTED, "True"), "SidecarInjected=True"
    )

    await api.json_patch(
        f"{DEPLOYMENTS}/tei",
        [
            {"op": "remove", "path": "/spec/template/spec/initContainers"},
            {"op": "add", "path": "/metadata/labels", "value": {"touched": "by-hand"}},
        ],
    )
    restored = await injected(api)
    assert sidecar(restored) == sidecar(dep)
    assert "SidecarRestored" in await eventually(
        lambda: _reason_seen(api, "SidecarRestored"), "a SidecarRestored event"
    )


async def _condition_is(api: Api, type_: str, status: str) -> bool:
    return condition(await api.get(f"{PROXIES}/tei"), type_).get("status") == status


async def _reason_seen(api: Api, reason: str) -> set[str] | None:
    reasons = await event_reasons(api)
    return reasons if reason in reasons else None


async def test_delete_gives_the_deployment_back_as_it_was(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    original = await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy())
    await injected(api)
    await eventually(lambda: config_of(api), "the ConfigMap")

    await api.delete(f"{PROXIES}/tei")

    async def released() -> Obj | None:
        dep = await api.get(f"{DEPLOYMENTS}/tei")
        return dep if sidecar(dep) is None and sidecar(dep, "containers") is None else None

    dep = await eventually(released, "the sidecar gone from the Deployment")
    assert dep["spec"]["template"] == original["spec"]["template"]
    assert names.PROXY_ANNOTATION not in (dep["metadata"].get("annotations") or {})
    assert await eventually(
        lambda: _gone(api, f"{CONFIGMAPS}/{names.configmap_name('tei')}"), "ConfigMap deleted"
    )
    assert await eventually(lambda: _gone(api, f"{PROXIES}/tei"), "the finalizer released")


async def _gone(api: Api, path: str) -> bool:
    return await api.get(path) is None


async def test_port_conflict_is_reported_and_the_deployment_left_alone(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    original = await api.create(DEPLOYMENTS, tei_deployment(port=8000))
    operator()
    await api.create(PROXIES, proxy())

    async def refused() -> Obj | None:
        cond = condition(await api.get(f"{PROXIES}/tei"), names.SIDECAR_INJECTED)
        return cond if cond.get("reason") == "PortConflict" else None

    cond = await eventually(refused, "the PortConflict condition")
    assert cond["status"] == "False"
    assert "8000" in cond["message"] and "spec.sidecar.ports.api" in cond["message"]
    dep = await api.get(f"{DEPLOYMENTS}/tei")
    assert dep["spec"]["template"] == original["spec"]["template"]

    # Choosing another port resolves it.
    await api.merge(f"{PROXIES}/tei", {"spec": {"sidecar": {"ports": {"api": 8080}}}})
    dep = await injected(api)
    assert sidecar(dep)["ports"][0]["containerPort"] == 8080
    assert (await config_of(api))["server"]["port"] == 8080


async def test_old_cluster_gets_a_regular_container(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    cluster.report_version("1", "27")
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    await api.create(PROXIES, proxy())

    async def as_container() -> Obj | None:
        return sidecar(await api.get(f"{DEPLOYMENTS}/tei"), "containers")

    side = await eventually(as_container, "the sidecar among the containers")
    assert "restartPolicy" not in side
    assert "NativeSidecarUnsupported" in await eventually(
        lambda: _reason_seen(api, "NativeSidecarUnsupported"), "a warning event"
    )


async def test_secrets_are_mounted_and_never_copied(
    cluster: Cluster, api: Api, operator: Any
) -> None:
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    auth = {
        "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
        "upstreamApiKeySecretRef": {"name": "tei-key", "key": "token"},
    }
    await api.create(PROXIES, proxy(auth=auth))
    dep = await injected(api)
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    assert volumes[names.API_KEYS_VOLUME]["secret"] == {
        "secretName": "client-keys",
        "items": [{"key": "keys", "path": "api-keys"}],
    }
    assert volumes[names.UPSTREAM_KEY_VOLUME]["secret"]["secretName"] == "tei-key"
    config = await eventually(lambda: config_of(api), "the ConfigMap")
    assert config["auth"] == {"api_keys_file": "/etc/embedding-proxy-secrets/api-keys/api-keys"}
    assert config["upstream"]["api_key_file"] == "/etc/embedding-proxy-secrets/upstream-key/api-key"

    # Dropping a reference unmounts its Secret.
    await api.merge(f"{PROXIES}/tei", {"spec": {"auth": {"apiKeysSecretRef": None}}})

    async def unmounted() -> Obj | None:
        dep = await api.get(f"{DEPLOYMENTS}/tei")
        vols = {v["name"] for v in pod_spec(dep)["volumes"]}
        return dep if names.API_KEYS_VOLUME not in vols else None

    dep = await eventually(unmounted, "the client-keys volume gone")
    mounts = {m["name"] for m in sidecar(dep)["volumeMounts"]}
    assert mounts == {names.CONFIG_VOLUME, names.UPSTREAM_KEY_VOLUME}


async def test_invalid_spec_is_explained(cluster: Cluster, api: Api, operator: Any) -> None:
    original = await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    bad = proxy(autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2})
    await api.create(PROXIES, copy.deepcopy(bad))

    async def explained() -> Obj | None:
        cond = condition(await api.get(f"{PROXIES}/tei"), names.SIDECAR_INJECTED)
        return cond if cond.get("reason") == "InvalidSpec" else None

    cond = await eventually(explained, "the InvalidSpec condition")
    assert "minReplicas must not exceed" in cond["message"]
    dep = await api.get(f"{DEPLOYMENTS}/tei")
    assert dep["spec"]["template"] == original["spec"]["template"]


async def test_status_counts_pods_whose_proxy_runs_the_current_config(
    cluster: Cluster, api: Api, operator: Any, tmp_path: Path
) -> None:
    """A real proxy process stands in for a pod: its IP is loopback, and the test plays the
    kubelet by copying the ConfigMap into the file the proxy watches."""
    api_port, metrics_port = free_port(), free_port()
    await api.create(DEPLOYMENTS, tei_deployment())
    operator()
    sidecar_spec = {"ports": {"api": api_port, "metrics": metrics_port}}
    await api.create(PROXIES, proxy(sidecar=sidecar_spec))
    await injected(api)
    config_file = tmp_path / "config.yaml"

    def project(config: Obj) -> None:
        local = {**config, "server": {**config["server"], "host": "127.0.0.1"}}
        config_file.write_text(yaml.safe_dump(local))

    first = await eventually(lambda: config_of(api), "the ConfigMap")
    project(first)
    sidecar_process = start_proxy(config_file, metrics_port, tmp_path / "proxy.log")
    try:
        await api.create(f"/api/v1/namespaces/{NS}/pods", ready_pod("tei-abc", "127.0.0.1"))

        async def counted(version: str) -> Obj | None:
            cr = await api.get(f"{PROXIES}/tei")
            status = cr.get("status", {})
            ok = status.get("podsOnConfigVersion") == 1 and status.get("configVersion") == version
            return cr if ok and condition(cr, names.CONFIG_APPLIED)["status"] == "True" else None

        cr = await eventually(lambda: counted(first["version"]), "the pod counted on the config")
        assert cr["status"]["podsReady"] == 1
        assert condition(cr, names.READY)["status"] == "True"

        await api.merge(f"{PROXIES}/tei", {"spec": {"batching": {"maxBatchSize": 7}}})

        async def rolling() -> Obj | None:
            cr = await api.get(f"{PROXIES}/tei")
            return cr if condition(cr, names.CONFIG_APPLIED).get("reason") == "Rolling" else None

        await eventually(rolling, "ConfigApplied=False while the pod runs the old config")
        second = await config_of(api)
        project(second)
        await eventually(lambda: counted(second["version"]), "the pod counted on the new config")
    finally:
        stop_process(sidecar_process)
