"""The operator run exactly as the chart installs it (its arguments, its environment), against the
emulated API: secret values reach nothing it logs or writes, and every request it sends is one
the chart's RBAC grants, and every grant is one it sends."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
from harness import condition, eventually, sidecar, write_kubeconfig
from installed import ChartCluster, Grant, TestApi, grants_used, install, start, stop
from tests.helpers.processes import free_port

from embedding_proxy_operator import names

NS = "demo"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
PROXIES = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
EVENTS = f"/api/v1/namespaces/{NS}/events"

# Recognisable values, so that any copy of them anywhere is found.
CLIENT_KEYS = ["sk-client-7f3a91c2-canary", "sk-client-0be4d6a8-canary"]
UPSTREAM_KEY = "hf-upstream-52c9e0d1-canary"
ROTATED_KEY = "sk-client-rotated-9a7b-canary"
CANARIES = [*CLIENT_KEYS, UPSTREAM_KEY, ROTATED_KEY]

# Granted for the autoscaler, which this scenario does not switch on.
AUTOSCALING: set[Grant] = {
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    *{("keda.sh", "scaledobjects", v) for v in ("get", "list", "create", "patch", "delete")},
}

Obj = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(value: str) -> list[str]:
    """The value as it may show up: itself, or base64 as Secret data carries it."""
    return [value, b64(value)]


def secret(name: str, key: str, value: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": {key: b64(value)},
    }


def tei_deployment() -> Obj:
    labels = {"app": "tei"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tei", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "tei",
                            "image": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8",
                            "ports": [{"name": "http", "containerPort": 80}],
                        }
                    ]
                },
            },
        },
    }


def embedding_proxy() -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "tei", "namespace": NS},
        "spec": {
            "targetRef": {"name": "tei"},
            "auth": {
                "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
                "upstreamApiKeySecretRef": {"name": "tei-token", "key": "token"},
            },
        },
    }


@dataclass
class Run:
    """What one run of the scenario left behind."""

    log: str
    requests: list[kmock.Request]
    configmaps: list[Obj]  # every version the test saw
    proxies: list[Obj]  # the EmbeddingProxy, status included, as the test saw it
    events: list[Obj]
    deployment: Obj


async def scenario(cluster: ChartCluster, api: TestApi, tmp_path: Path) -> Run:
    """Install as the chart does, then: an EmbeddingProxy that references two Secrets, a
    batching change, a key rotation, and deletion."""
    chart = install(free_port())
    peering = next(a.split("=", 1)[1] for a in chart.args if a.startswith("--peering="))
    cluster.add_cluster_peering(peering)
    await api.create(SECRETS, secret("client-keys", "keys", "\n".join(CLIENT_KEYS)))
    await api.create(SECRETS, secret("tei-token", "token", UPSTREAM_KEY))
    await api.create(DEPLOYMENTS, tei_deployment())

    log = tmp_path / "operator.log"
    pod = {"POD_ID": "embedding-proxy-5d8c7b9f4-x2kq7", "POD_NAMESPACE": "embedding-proxy-system"}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url))
    proc = start(chart.args, kubeconfig, log, {**chart.env, **pod})
    seen_configmaps: list[Obj] = []
    seen_proxies: list[Obj] = []
    try:
        await api.create(PROXIES, embedding_proxy())

        async def injected() -> Obj | None:
            cr = await api.get(f"{PROXIES}/tei")
            seen_proxies.append(cr or {})
            ok = condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
            return cr if ok and "podsReady" in cr.get("status", {}) else None

        await eventually(injected, "the sidecar injected and the pods counted")
        seen_configmaps.extend(await api.items(CONFIGMAPS))

        await api.merge(f"{PROXIES}/tei", {"spec": {"batching": {"maxBatchSize": 8}}})

        async def rewritten() -> list[Obj] | None:
            cms = await api.items(CONFIGMAPS)
            seen_configmaps.extend(cms)
            return cms if any("max_batch_size: 8" in json.dumps(c) for c in cms) else None

        await eventually(rewritten, "the batching change in the ConfigMap")
        await api.merge(f"{SECRETS}/client-keys", {"data": {"keys": b64(ROTATED_KEY)}})
        seen_proxies.append(await api.get(f"{PROXIES}/tei") or {})
        deployment = await api.get(f"{DEPLOYMENTS}/tei") or {}
        events = await api.items(EVENTS)

        await api.delete(f"{PROXIES}/tei")

        async def released() -> bool:
            dep = await api.get(f"{DEPLOYMENTS}/tei")
            gone = await api.get(f"{PROXIES}/tei") is None
            return gone and sidecar(dep) is None

        await eventually(released, "the EmbeddingProxy deleted and the sidecar gone")
        events += await api.items(EVENTS)
    finally:
        code = await stop(proc)
        text = log.read_text(errors="replace")
        print(f"---- operator log (exit {code}) ----\n{text[-20000:]}")
    assert "Traceback" not in text, "the operator logged an unhandled exception"
    assert code == 0, "the operator did not stop cleanly on SIGTERM"
    return Run(text, cluster.sent_by_operator(), seen_configmaps, seen_proxies, events, deployment)


async def test_secret_values_reach_no_log_configmap_status_or_event(
    chart_cluster: ChartCluster, chart_api: TestApi, tmp_path: Path
) -> None:
    run = await scenario(chart_cluster, chart_api, tmp_path)

    # The Secrets are mounted by reference, and the config points at the mounted files.
    volumes = {v["name"]: v for v in run.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[names.API_KEYS_VOLUME]["secret"]["secretName"] == "client-keys"
    assert volumes[names.UPSTREAM_KEY_VOLUME]["secret"]["secretName"] == "tei-token"
    config = "\n".join(c["data"][names.CONFIG_KEY] for c in run.configmaps)
    assert f"api_keys_file: {names.API_KEYS_DIR}/{names.API_KEYS_FILE}" in config
    assert f"api_key_file: {names.UPSTREAM_KEY_DIR}/{names.UPSTREAM_KEY_FILE}" in config
    assert run.events and run.configmaps and run.proxies

    places = {
        "the operator's log": [run.log],
        "a ConfigMap": [json.dumps(c) for c in run.configmaps],
        "the EmbeddingProxy or its status": [json.dumps(p) for p in run.proxies],
        "an Event": [json.dumps(e) for e in run.events],
        "the Deployment": [json.dumps(run.deployment)],
        "a request the operator sent": [f"{r.url} {r.text}" for r in run.requests],
    }
    for canary in CANARIES:
        for form in forms(canary):
            for place, texts in places.items():
                assert not any(form in t for t in texts), f"{canary!r} found in {place}"
    # It never even asked for them.
    touched = [f"{r.method.value} {r.url.path}" for r in run.requests if "/secrets" in r.url.path]
    assert touched == []


async def test_the_chart_grants_exactly_what_the_operator_sends(
    chart_cluster: ChartCluster, chart_api: TestApi, tmp_path: Path
) -> None:
    run = await scenario(chart_cluster, chart_api, tmp_path)
    granted = install(free_port()).grants
    used = grants_used(run.requests)
    missing = {grant: example for grant, example in used.items() if grant not in granted}
    assert not missing, f"sent without a grant: {missing}"
    # Every grant is used, but the autoscaler's (its own end-to-end test exercises those).
    assert granted - AUTOSCALING - used.keys() == set()
