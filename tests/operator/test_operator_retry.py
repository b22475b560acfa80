"""Writes that are refused for a while: the operator keeps trying on its own, with backoff, and
converges without waiting for another event. The real API server refuses them: a
ValidatingAdmissionPolicy answers the operator's writes to Deployments with 422 (what a failed
`test` of the resourceVersion gets while a rollout keeps changing the Deployment) for as long as
the test's namespace carries a label, and taking the label off is no event the operator sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from harness import (
    Api,
    Paths,
    condition,
    embedding_proxy,
    eventually,
    sidecar,
    tei_deployment,
)
from installed import Account
from tests.helpers.control_plane import ControlPlane

from embedding_proxy_operator.handlers.reconcile import PATCH_ATTEMPTS
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
LABEL = "test.embeddingproxy.io/refuse-operator-writes"
MESSAGE = "the test holds this Deployment"


@pytest.fixture
def refusal(cluster: ControlPlane, cluster_account: Account, namespace: str) -> Iterator[str]:
    """A policy refusing the operator's updates of Deployments in namespaces with LABEL."""
    name = f"refuse-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "the-operator",
                    "expression": f"request.userInfo.username == '{cluster_account.username}'",
                }
            ],
            "validations": [{"expression": "false", "message": MESSAGE, "reason": "Invalid"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {LABEL: "true", "kubernetes.io/metadata.name": namespace}
                }
            },
        },
    }
    cluster.apply([policy, binding])
    yield name
    cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
    cluster.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def refused_patches(cluster: ControlPlane, account: Account, namespace: str) -> int:
    """How many of the operator's writes of Deployment tei the API server refused with 422."""
    uri = f"/apis/apps/v1/namespaces/{namespace}/deployments/tei?"
    return sum(
        1
        for e in cluster.audit_events(account.username)
        if e.get("stage") == "ResponseComplete"
        and e["user"]["username"] == account.username
        and e["verb"] == "patch"
        and e["requestURI"].startswith(uri)
        and e.get("responseStatus", {}).get("code") == 422
    )


async def test_the_sidecar_comes_back_after_refused_patches_without_another_event(
    cluster: ControlPlane,
    cluster_account: Account,
    refusal: str,
    api: Api,
    paths: Paths,
    operator: Any,
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))

    async def injected() -> bool:
        cr = await api.get(f"{paths.proxies}/tei")
        dep = await api.get(f"{paths.deployments}/tei")
        return sidecar(dep) is not None and (
            condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
        )

    await eventually(injected, "the sidecar injected")

    # From now on the operator's writes of the Deployment are refused; wait until they are.
    cluster.kubectl("label", "namespace", paths.ns, f"{LABEL}=true")
    probe = json.dumps({"metadata": {"annotations": {"probe": "1"}}})

    async def in_force() -> bool:
        done = cluster.kubectl(
            "patch", "deployment", "tei", "-n", paths.ns, "--dry-run=server", "-p", probe,
            f"--as={cluster_account.username}", check=False,
        )  # fmt: skip
        return done.returncode != 0 and MESSAGE in done.stderr

    await eventually(in_force, "the policy in force")

    # The sidecar is taken out by hand: the operator's patches to put it back are refused.
    await api.json_patch(
        f"{paths.deployments}/tei",
        [{"op": "remove", "path": "/spec/template/spec/initContainers"}],
    )

    async def failing() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        cond = condition(cr, names.SIDECAR_INJECTED)
        return cond if cond.get("reason") == "PatchFailed" else None

    cond = await eventually(failing, "SidecarInjected=False, reason PatchFailed")
    assert MESSAGE in cond["message"]

    # More refusals than one reconciliation's rounds: it went on trying after giving up once.
    async def kept_trying() -> int | None:
        n = refused_patches(cluster, cluster_account, paths.ns)
        return n if n > PATCH_ATTEMPTS else None

    await eventually(kept_trying, f"more than {PATCH_ATTEMPTS} refused patches", timeout=60)

    # The rollout the removal started has settled: nothing but the operator will write the
    # Deployment again, so no further event of it is coming.
    async def settled() -> Obj | None:
        dep = await api.get(f"{paths.deployments}/tei")
        observed = (dep or {}).get("status", {}).get("observedGeneration")
        return dep if dep and observed == dep["metadata"]["generation"] else None

    held = await eventually(settled, "the Deployment's rollout observed")
    assert sidecar(held) is None

    # The refusal ends; no object the operator watches changes with it.
    cluster.kubectl("label", "namespace", paths.ns, f"{LABEL}-")

    async def restored() -> Obj | None:
        cr = await api.get(f"{paths.proxies}/tei")
        dep = await api.get(f"{paths.deployments}/tei")
        ok = condition(cr, names.SIDECAR_INJECTED).get("status") == "True"
        return dep if ok and sidecar(dep) is not None else None

    dep = await eventually(restored, "the sidecar back, with no further event", timeout=60)
    assert sidecar(dep)["restartPolicy"] == "Always"
    # The write that put it back was the first write of the Deployment (by anyone, status
    # included) after the refusal ended: nothing else set the operator going.
    events = cluster.audit_events()
    ended = max(
        e["requestReceivedTimestamp"]
        for e in events
        if e["verb"] == "patch" and e["requestURI"].startswith(f"/api/v1/namespaces/{paths.ns}?")
    )
    writes = [
        e
        for e in events
        if e.get("stage") == "ResponseComplete"
        and e["verb"] in ("patch", "update")
        and e["requestURI"].startswith(f"/apis/apps/v1/namespaces/{paths.ns}/deployments/tei")
        and e.get("responseStatus", {}).get("code", 500) < 300
        and e["requestReceivedTimestamp"] > ended
    ]
    assert writes and writes[0]["user"]["username"] == cluster_account.username, writes[:3]
