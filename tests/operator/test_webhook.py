"""Webhook mode on the real API server: the API server calls the operator's admission webhook over
HTTPS on loopback (`clientConfig.url`), the controller-manager's ReplicaSets create the pods, and
a watch records every pod as it was first stored."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import (
    ROOT,
    Api,
    Kubelet,
    Paths,
    condition,
    embedding_proxy,
    eventually,
    pod_spec,
    sidecar,
    tei_deployment,
)
from installed import Account, webhook_env
from tests.helpers.control_plane import ControlPlane
from tests.helpers.link import Link
from tests.helpers.processes import free_port

from embedding_proxy_operator.logic import injection
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
EXAMPLE = ROOT / "manifests" / "examples" / "tei.yaml"


def reached_through(port: int, front: int) -> dict[str, str]:
    """The operator's webhook on `port`, which the API server is sent to at `front`."""
    return {
        **webhook_env(port),
        "EMBEDDING_PROXY_OPERATOR_WEBHOOK_URL": f"https://127.0.0.1:{front}",
    }


def configuration_path(account: Account) -> str:
    name = account.env["EMBEDDING_PROXY_OPERATOR_WEBHOOK_CONFIGURATION"]
    return f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"


async def published(api: Api, account: Account, port: int) -> Obj:
    """The configuration, once it sends pods to the webhook on `port`."""

    async def probe() -> Obj | None:
        mwc = await api.get(configuration_path(account))
        hooks = {h["name"]: h for h in (mwc or {}).get("webhooks") or []}
        url = hooks.get(injection.POD_WEBHOOK, {}).get("clientConfig", {}).get("url", "")
        return mwc if url.startswith(f"https://127.0.0.1:{port}/") else None

    return await eventually(probe, f"the webhook configured at port {port}", timeout=60)


class PodRecorder:
    """Every pod of the namespace as first stored: a watch from the list's resourceVersion, so
    none is missed. name -> names of its containers and init containers."""

    def __init__(self, api: Api, paths: Paths) -> None:
        self.api, self.paths = api, paths
        self.first: dict[str, list[str]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self.api.call("GET", self.paths.pods)
        assert listing is not None and not listing.get("items")
        self.task = asyncio.create_task(self._watch(listing["metadata"]["resourceVersion"]))

    async def _watch(self, rv: str) -> None:
        while True:
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"}
            async with self.api.session.get(
                self.paths.pods.lstrip("/"),
                params=params,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=90),
            ) as resp:
                assert resp.status == 200, await resp.text()
                async for line in resp.content:
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] == "ADDED":
                        spec = obj.get("spec") or {}
                        self.first.setdefault(
                            obj["metadata"]["name"],
                            [c["name"] for c in spec.get("initContainers") or []]
                            + [c["name"] for c in spec.get("containers") or []],
                        )

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def replica_sets(api: Api, paths: Paths, deployment: str) -> list[Obj]:
    items = await api.items(f"/apis/apps/v1/namespaces/{paths.ns}/replicasets")
    return [
        rs
        for rs in items
        if any(r.get("name") == deployment for r in rs["metadata"].get("ownerReferences") or [])
    ]


async def pods_of(api: Api, paths: Paths, app_label: str, value: str) -> list[Obj]:
    return [
        p
        for p in await api.items(paths.pods, labelSelector=f"{app_label}={value}")
        if not p["metadata"].get("deletionTimestamp")
    ]


def has_sidecar(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return any(
        c["name"] == names.SIDECAR_NAME
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    )


async def test_apply_of_the_example_never_makes_a_pod_without_the_proxy_and_a_restart_rolls_once(
    api: Api,
    paths: Paths,
    operator: Any,
    cluster: ControlPlane,
    cluster_account: Account,
    kubelet: Callable[[list[str]], Kubelet],
) -> None:
    port = free_port()
    operator(EMBEDDING_PROXY_OPERATOR_INJECTION="Webhook", **webhook_env(port))
    await published(api, cluster_account, port)
    kubelet(["127.0.0.91", "127.0.0.92", "127.0.0.93"])
    recorder = PodRecorder(api, paths)
    await recorder.start()
    try:
        await asyncio.to_thread(cluster.kubectl, "apply", "-n", paths.ns, "-f", str(EXAMPLE))
        # A Deployment of its own beside it: no EmbeddingProxy names it.
        other = tei_deployment(paths.ns, name="other", replicas=1)
        await api.create(paths.deployments, other)
        label = "app.kubernetes.io/name"

        async def both_running() -> bool:
            tei = await pods_of(api, paths, label, "tei")
            rest = await pods_of(api, paths, "app", "other")
            return len(tei) == 1 and len(rest) == 1

        await eventually(both_running, "a pod of each Deployment", timeout=60)
        (tei_pod,) = await pods_of(api, paths, label, "tei")
        (other_pod,) = await pods_of(api, paths, "app", "other")
        assert recorder.first[tei_pod["metadata"]["name"]] == [names.SIDECAR_NAME, "tei"]
        assert recorder.first[other_pod["metadata"]["name"]] == ["tei"]
        assert not has_sidecar(other_pod)
        # The pod got the whole rendering: volumes, the preStop sleep, the grace period.
        volumes = {v["name"] for v in tei_pod["spec"]["volumes"]}
        assert names.CONFIG_VOLUME in volumes and "data" in volumes
        (tei_container,) = tei_pod["spec"]["containers"]
        assert "sleep" in tei_container["lifecycle"]["preStop"]
        assert tei_pod["spec"]["terminationGracePeriodSeconds"] == 37

        dep = await api.get(f"{paths.deployments}/tei")
        assert sidecar(dep) is None and sidecar(dep, "containers") is None
        assert names.RESTART_HASH_ANNOTATION not in (
            dep["spec"]["template"]["metadata"].get("annotations") or {}
        )
        assert len(await replica_sets(api, paths, "tei")) == 1

        async def hashed() -> str | None:
            proxy = await api.get(f"{paths.proxies}/tei")
            return ((proxy or {}).get("status") or {}).get("injection", {}).get("hash")

        first_hash = await eventually(hashed, "status.injection.hash")

        # A live change (batching) rolls nothing.
        await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": 64}}})

        # A change that needs a restart rolls the pods once, through the webhook.
        await api.merge(f"{paths.proxies}/tei", {"spec": {"sidecar": {"logLevel": "debug"}}})

        async def rolled() -> Obj | None:
            dep = await api.get(f"{paths.deployments}/tei")
            annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
            current = await hashed()
            value = annotations.get(names.RESTART_HASH_ANNOTATION)
            if current == first_hash or value != current:
                return None
            status = dep.get("status") or {}
            done = (
                status.get("observedGeneration") == dep["metadata"]["generation"]
                and status.get("updatedReplicas") == 1
                and status.get("replicas") == 1
            )
            return dep if done else None

        await eventually(rolled, "the pods rolled to the new injection", timeout=90)
        assert len(await replica_sets(api, paths, "tei")) == 2
        (new_pod,) = await eventually(
            lambda: _new_pod(api, paths, tei_pod["metadata"]["name"]), "the new pod"
        )
        assert recorder.first[new_pod["metadata"]["name"]] == [names.SIDECAR_NAME, "tei"]
        (side,) = [c for c in new_pod["spec"]["initContainers"] if c["name"] == names.SIDECAR_NAME]
        assert side["image"] == "embedding-proxy:0.1.0"
        # Once: a further reconciliation (the Deployment's events) changes nothing.
        await api.merge(f"{paths.deployments}/tei", {"metadata": {"labels": {"poke": "1"}}})
        proxy = await api.get(f"{paths.proxies}/tei")
        assert condition(proxy, names.SIDECAR_INJECTED)["reason"] == "Webhook"
        assert len(await replica_sets(api, paths, "tei")) == 2
        # Every pod ever made for the target had the proxy from its first version.
        tei_pods = [n for n in recorder.first if n.startswith("tei-")]
        assert len(tei_pods) >= 2
        assert all(recorder.first[n] == [names.SIDECAR_NAME, "tei"] for n in tei_pods)
        assert all(recorder.first[n] == ["tei"] for n in recorder.first if n.startswith("other-"))
    finally:
        await recorder.stop()


async def _new_pod(api: Api, paths: Paths, old: str) -> list[Obj] | None:
    pods = await pods_of(api, paths, "app.kubernetes.io/name", "tei")
    return pods if len(pods) == 1 and pods[0]["metadata"]["name"] != old else None


async def test_pods_made_while_the_webhook_is_unreachable_are_named_and_made_anew(
    api: Api,
    paths: Paths,
    operator: Any,
    cluster_account: Account,
    kubelet: Callable[[list[str]], Kubelet],
) -> None:
    port = free_port()
    # The API server reaches the webhook through a link the test cuts (a network partition):
    # the configuration is the operator's, and an edit of it would be put back at once.
    link = Link(port)
    front = await link.start()
    operator(**reached_through(port, front))  # Deployment mode by default; this one asks
    await published(api, cluster_account, front)
    kubelet(["127.0.0.94", "127.0.0.95"])
    link.cut()

    await api.create(paths.proxies, embedding_proxy(paths.ns, injection="Webhook"))
    await api.create(paths.deployments, tei_deployment(paths.ns, replicas=1))

    async def escaped_pod() -> list[Obj] | None:
        pods = await pods_of(api, paths, "app", "tei")
        return pods if len(pods) == 1 else None

    (pod,) = await eventually(escaped_pod, "the pod made without the webhook")
    assert not has_sidecar(pod)
    pod_name = pod["metadata"]["name"]

    async def named() -> Obj | None:
        proxy = await api.get(f"{paths.proxies}/tei")
        c = condition(proxy, names.SIDECAR_INJECTED)
        ok = c.get("reason") == "WebhookUnreachable" and pod_name in c.get("message", "")
        return proxy if ok and c["status"] == "False" else None

    proxy = await eventually(named, "the escaped pod named in SidecarInjected")
    assert proxy["status"]["injection"]["podsWithoutSidecar"] == [pod_name]
    events = await api.items(paths.events)
    assert any(
        e.get("reason") == "PodsWithoutSidecar" and pod_name in e.get("message", "") for e in events
    )
    # It stays while the webhook is down: nothing is deleted that would come back the same.
    assert [p["metadata"]["name"] for p in await pods_of(api, paths, "app", "tei")] == [pod_name]
    # A bare pod that merely matches the selector (`kubectl run impostor --labels=app=tei`) is
    # not the Deployment's: never named, never deleted.
    impostor = await api.create(
        f"/api/v1/namespaces/{paths.ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "impostor", "labels": {"app": "tei"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
        },
    )

    # Back: the pod is made anew, through the webhook.
    link.restore()

    async def replaced() -> list[Obj] | None:
        pods = [
            p
            for p in await pods_of(api, paths, "app", "tei")
            if p["metadata"]["name"] != "impostor"
        ]
        fresh = [p for p in pods if p["metadata"]["name"] != pod_name]
        return fresh if len(pods) == 1 and fresh and has_sidecar(fresh[0]) else None

    await eventually(replaced, "the escaped pod re-created with the sidecar", timeout=60)

    async def healed() -> Obj | None:
        proxy = await api.get(f"{paths.proxies}/tei")
        c = condition(proxy, names.SIDECAR_INJECTED)
        return proxy if c.get("status") == "True" and c.get("reason") == "Webhook" else None

    proxy = await eventually(healed, "SidecarInjected True again")
    assert not proxy["status"]["injection"].get("podsWithoutSidecar")
    dep = await api.get(f"{paths.deployments}/tei")
    assert pod_spec(dep)["containers"][0]["name"] == "tei" and sidecar(dep) is None
    assert any(e.get("reason") == "EscapedPodsDeleted" for e in await api.items(paths.events))
    still = await api.get(f"/api/v1/namespaces/{paths.ns}/pods/impostor")
    assert still is not None and still["metadata"]["uid"] == impostor["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")
    assert not any("impostor" in e.get("message", "") for e in await api.items(paths.events))
    await link.close()


async def test_pods_of_a_target_the_plan_refuses_are_never_deleted_as_escaped(
    api: Api,
    paths: Paths,
    operator: Any,
    cluster_account: Account,
    kubelet: Callable[[list[str]], Kubelet],
) -> None:
    """TEI on the proxy's port 8000 (PortConflict): the webhook injects nothing, so the pods did
    not escape it; re-creating them would bring back the same pods."""
    port = free_port()
    operator(**webhook_env(port))
    await published(api, cluster_account, port)
    kubelet(["127.0.0.96", "127.0.0.97"])
    await api.create(paths.deployments, tei_deployment(paths.ns, replicas=2, port=8000))
    await api.create(paths.proxies, embedding_proxy(paths.ns, injection="Webhook"))

    async def observed() -> Obj | None:
        proxy = await api.get(f"{paths.proxies}/tei")
        ready = ((proxy or {}).get("status") or {}).get("readyReplicas") == 2
        refused = condition(proxy, names.SIDECAR_INJECTED).get("reason") == "PortConflict"
        return proxy if ready and refused else None

    await eventually(observed, "PortConflict with both pods ready", timeout=90)
    first = {p["metadata"]["uid"] for p in await pods_of(api, paths, "app", "tei")}
    assert len(first) == 2
    # A window of many observe polls (every 0.5 s here): none deletes a pod.
    await asyncio.sleep(5)
    assert {p["metadata"]["uid"] for p in await pods_of(api, paths, "app", "tei")} == first
    proxy = await api.get(f"{paths.proxies}/tei")
    assert condition(proxy, names.SIDECAR_INJECTED)["reason"] == "PortConflict"
    assert not (proxy["status"].get("injection") or {}).get("podsWithoutSidecar")
    reasons = {e.get("reason") for e in await api.items(paths.events)}
    assert not reasons & {"PodsWithoutSidecar", "EscapedPodsDeleted"}


async def test_the_certificate_is_valid_for_the_address_the_api_server_uses(
    api: Api, paths: Paths, operator: Any, cluster_account: Account, tmp_path: Path
) -> None:
    port = free_port()
    operator(**webhook_env(port))
    mwc = await published(api, cluster_account, port)
    bundle = base64.b64decode(mwc["webhooks"][0]["clientConfig"]["caBundle"])
    (tmp_path / "ca.pem").write_bytes(bundle)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    def handshake(name: str) -> dict[str, Any]:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            return tls.getpeercert() or {}

    cert = await asyncio.to_thread(handshake, "127.0.0.1")
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(handshake, "example.com")
    # Scoped narrowly: new pods of ReplicaSets only, never the system's namespaces, a short wait.
    (pods_hook,) = [h for h in mwc["webhooks"] if h["name"] == injection.POD_WEBHOOK]
    assert pods_hook["rules"][0]["resources"] == ["pods"]
    assert pods_hook["rules"][0]["operations"] == ["CREATE"]
    assert pods_hook["sideEffects"] == "None" and pods_hook["timeoutSeconds"] <= 5
    assert pods_hook["failurePolicy"] == "Ignore"
    excluded = pods_hook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn" and "kube-system" in excluded["values"]
    assert cluster_account.namespace in excluded["values"]


async def test_with_failure_policy_fail_no_pod_is_made_until_the_webhook_answers(
    api: Api, paths: Paths, operator: Any, cluster_account: Account
) -> None:
    port = free_port()
    link = Link(port)
    front = await link.start()
    # For this namespace only: the session's other namespaces are not held back while it is down.
    operator(
        EMBEDDING_PROXY_OPERATOR_WEBHOOK_FAILURE_POLICY="Fail",
        EMBEDDING_PROXY_OPERATOR_WEBHOOK_NAMESPACES=paths.ns,
        **reached_through(port, front),
    )
    working = await published(api, cluster_account, front)
    hooks = {h["name"]: h for h in working["webhooks"]}
    assert hooks[injection.POD_WEBHOOK]["failurePolicy"] == "Fail"
    link.cut()  # down
    recorder = PodRecorder(api, paths)
    await recorder.start()
    try:
        await api.create(paths.proxies, embedding_proxy(paths.ns, injection="Webhook"))
        await api.create(paths.deployments, tei_deployment(paths.ns, replicas=1))

        async def refused() -> bool:
            events = await api.items(paths.events)
            return any(
                e.get("reason") == "FailedCreate" and "webhook" in e.get("message", "")
                for e in events
            )

        await eventually(refused, "the ReplicaSet's pod refused while the webhook is down")
        assert not await pods_of(api, paths, "app", "tei") and not recorder.first

        link.restore()

        async def made() -> list[Obj] | None:
            pods = await pods_of(api, paths, "app", "tei")
            return pods or None

        (pod,) = await eventually(made, "the pod made once the webhook answers", timeout=90)
        assert has_sidecar(pod)
        assert all(names.SIDECAR_NAME in first for first in recorder.first.values())
    finally:
        await recorder.stop()
        await link.close()
