"""The operator installed as the chart installs it (its ServiceAccount and RBAC, its arguments and
environment), in cluster-wide and in namespaced mode, against the real API server: secret values
reach nothing it logs or writes, it never asks for a Secret, and the audit log shows every request
it sent granted, and every grant (but the autoscaler's) used."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import pytest
from harness import (
    Api,
    Operators,
    Paths,
    condition,
    eventually,
    sidecar,
    tei_deployment,
)
from installed import Account, Grant, check_never_forbidden, grants_used, install_account
from tests.helpers.control_plane import ControlPlane

from embedding_proxy_operator.model import names

# Recognisable values, so that any copy of them anywhere is found.
CLIENT_KEYS = ["sk-client-7f3a91c2-canary", "sk-client-0be4d6a8-canary"]
UPSTREAM_KEY = "hf-upstream-52c9e0d1-canary"
ROTATED_KEY = "sk-client-rotated-9a7b-canary"
CANARIES = [*CLIENT_KEYS, UPSTREAM_KEY, ROTATED_KEY]

# Granted for the autoscaler, which this scenario does not switch on.
AUTOSCALING: set[Grant] = {
    ("apps", "deployments/scale", "patch"),
    *{("keda.sh", "scaledobjects", v) for v in ("get", "create", "patch", "delete")},
}
# Granted for Webhook mode's re-creation of pods made without the sidecar, which
# test_webhook.py exercises (as this account too).
ESCAPED_PODS: set[Grant] = {("", "pods", "delete"), ("apps", "replicasets", "get")}

Obj = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forms(value: str) -> list[str]:
    """The value as it may show up: itself, or base64 as Secret data carries it."""
    return [value, b64(value)]


def secret(ns: str, name: str, key: str, value: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "data": {key: b64(value)},
    }


def embedding_proxy(ns: str) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "tei", "namespace": ns},
        "spec": {
            "targetRef": {"name": "tei"},
            "auth": {
                "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
                "upstreamApiKeySecretRef": {"name": "tei-token", "key": "token"},
            },
        },
    }


async def ours(api: Api, paths: Paths) -> list[Obj]:
    """The EmbeddingProxy's ConfigMap (a namespace has others: kube-root-ca.crt)."""
    cm = await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}")
    return [cm] if cm else []


@pytest.fixture
def namespaced_account(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Account]:
    """The chart installed into the test's namespace in namespaced mode (a Role there, and
    only what kopf reads cluster-wide); no request of it may have been refused."""
    account = install_account(
        cluster,
        tmp_path,
        f"e2e-{namespace[-6:]}",
        namespace,
        "--set",
        "operator.watch.mode=namespaced",
    )
    yield account
    check_never_forbidden(cluster, account)


@dataclass
class Run:
    """What one run of the scenario left behind."""

    log: str
    requests: list[Obj]  # the operator's requests, from the audit log (each stage of each)
    configmaps: list[Obj]  # every version the test saw
    proxies: list[Obj]  # the EmbeddingProxy, status included, as the test saw it
    events: list[Obj]
    deployment: Obj


async def scenario(
    cluster: ControlPlane, api: Api, paths: Paths, operator: Operators, account: Account
) -> Run:
    """Installed as the chart does, then: an EmbeddingProxy that references two Secrets, a
    batching change, a key rotation, and deletion."""
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    await api.create(paths.secrets, secret(paths.ns, "client-keys", "keys", "\n".join(CLIENT_KEYS)))
    await api.create(paths.secrets, secret(paths.ns, "tei-token", "token", UPSTREAM_KEY))
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator(account)
    seen_configmaps: list[Obj] = []
    seen_proxies: list[Obj] = []
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def injected() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        seen_proxies.append(cr or {})
        ok = condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
        return cr if ok and "podsReady" in cr.get("status", {}) else None

    await eventually(injected, "the sidecar injected and the pods counted")
    # The Lease renewed once at least (every 2 s), so that its patch is among the grants used.
    acquired = ((await api.get(account.lease_path)) or {}).get("spec", {}).get("renewTime")

    async def renewed() -> bool:
        lease = (await api.get(account.lease_path)) or {}
        return lease.get("spec", {}).get("renewTime") != acquired

    await eventually(renewed, "the Lease renewed")
    seen_configmaps.extend(await ours(api, paths))

    await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": 8}}})

    async def rewritten() -> list[Obj] | None:
        cms = await ours(api, paths)
        seen_configmaps.extend(cms)
        return cms if any("max_batch_size: 8" in json.dumps(c) for c in cms) else None

    await eventually(rewritten, "the batching change in the ConfigMap")
    await api.merge(f"{paths.secrets}/client-keys", {"data": {"keys": b64(ROTATED_KEY)}})
    seen_proxies.append(await api.get(f"{paths.proxies}/tei") or {})
    deployment = await api.get(f"{paths.deployments}/tei") or {}
    events = await api.items(paths.events)

    await api.delete(f"{paths.proxies}/tei")

    async def released() -> bool:
        dep = await api.get(f"{paths.deployments}/tei")
        gone = await api.get(f"{paths.proxies}/tei") is None
        return gone and sidecar(dep) is None

    await eventually(released, "the EmbeddingProxy deleted and the sidecar gone")
    events += await api.items(paths.events)
    # Every stage: a watch still open has no ResponseComplete yet.
    requests = [
        e
        for e in cluster.audit_events(account.username)
        if e["requestReceivedTimestamp"] >= started
    ]
    return Run("", requests, seen_configmaps, seen_proxies, events, deployment)


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
async def test_secrets_stay_secret_and_the_chart_grants_exactly_what_is_used(
    mode: str,
    request: pytest.FixtureRequest,
    cluster: ControlPlane,
    api: Api,
    paths: Paths,
    operator: Operators,
) -> None:
    fixture = "cluster_account" if mode == "cluster" else "namespaced_account"
    account: Account = request.getfixturevalue(fixture)
    run = await scenario(cluster, api, paths, operator, account)

    # The Secrets are mounted by reference, and the config points at the mounted files.
    volumes = {v["name"]: v for v in run.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[names.API_KEYS_VOLUME]["secret"]["secretName"] == "client-keys"
    assert volumes[names.UPSTREAM_KEY_VOLUME]["secret"]["secretName"] == "tei-token"
    config = "\n".join(c["data"][names.CONFIG_KEY] for c in run.configmaps)
    assert f"api_keys_file: {names.API_KEYS_DIR}/{names.API_KEYS_FILE}" in config
    assert f"api_key_file: {names.UPSTREAM_KEY_DIR}/{names.UPSTREAM_KEY_FILE}" in config
    assert run.events and run.configmaps and run.proxies

    places = {
        "the operator's log": [operator.logs()],
        "a ConfigMap": [json.dumps(c) for c in run.configmaps],
        "the EmbeddingProxy or its status": [json.dumps(p) for p in run.proxies],
        "an Event": [json.dumps(e) for e in run.events],
        "the Deployment": [json.dumps(run.deployment)],
    }
    for canary in CANARIES:
        for form in forms(canary):
            for place, texts in places.items():
                assert not any(form in t for t in texts), f"{canary!r} found in {place}"
    # It never even asked for them.
    touched = [
        e["requestURI"]
        for e in run.requests
        if (e.get("objectRef") or {}).get("resource") == "secrets"
    ]
    assert touched == []

    # Everything it sent was granted, and every grant but the autoscaler's was needed.
    used = grants_used(run.requests)
    print(f"{mode} mode, grants used: {sorted(used)}")
    missing = {grant: example for grant, example in used.items() if grant not in account.grants}
    assert not missing, f"sent without a grant: {missing}"
    assert account.grants - AUTOSCALING - ESCAPED_PODS - used.keys() == set()


async def test_a_namespaced_operator_refuses_webhook_injection_and_deletes_cleanly(
    api: Api, paths: Paths, operator: Operators, namespaced_account: Account
) -> None:
    """The chart's namespaced install has no webhook (it would be cluster-wide): a Webhook-mode
    EmbeddingProxy gets a clear condition and Event, nothing is written, and deletion completes."""
    assert "EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT" not in namespaced_account.env
    original = await api.create(paths.deployments, tei_deployment(paths.ns))
    operator(namespaced_account)
    await api.create(paths.proxies, harness.embedding_proxy(paths.ns, injection="Webhook"))

    async def refused() -> Obj | None:
        cond = condition(await api.get(f"{paths.proxies}/tei"), names.SIDECAR_INJECTED)
        return cond if cond.get("reason") == "WebhookUnavailable" else None

    cond = await eventually(refused, "SidecarInjected WebhookUnavailable", timeout=60)
    assert cond["status"] == "False" and "cluster mode" in cond["message"]

    async def warned() -> Obj | None:
        for e in await api.items(paths.events):
            if e.get("reason") == "WebhookUnavailable" and e.get("type") == "Warning":
                return e
        return None

    await eventually(warned, "a WebhookUnavailable Warning event")
    assert await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}") is None
    dep = await api.get(f"{paths.deployments}/tei")
    assert dep["spec"]["template"] == original["spec"]["template"]

    await api.delete(f"{paths.proxies}/tei")

    async def gone() -> bool:
        return await api.get(f"{paths.proxies}/tei") is None

    await eventually(gone, "the EmbeddingProxy deleted", timeout=60)
