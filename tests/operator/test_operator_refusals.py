"""What the operator refuses to touch, on the real API server as the chart's ServiceAccount."""

from __future__ import annotations

from typing import Any

from harness import Api, Paths, condition, embedding_proxy, eventually, sidecar, tei_deployment

from embedding_proxy_operator.model import names

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


async def test_config_applied_says_written_only_after_the_write(
    api: Api, paths: Paths, operator: Any
) -> None:
    """The API server refuses the ConfigMap (here: an admission policy answering 422, as it does
    for a bad label): status says so, and the pods' poll never claims the config is written."""
    policy = f"no-proxy-configmaps-{paths.ns}"
    vap = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    bindings = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    await api.create(
        vap,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"!has(object.metadata.labels) || "
                        f"!('{names.LABEL_PROXY}' in object.metadata.labels)",
                        "message": "refused by the test's policy",
                        "reason": "Invalid",
                    }
                ],
            },
        },
    )
    await api.create(
        bindings,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": paths.ns}}
                },
            },
        },
    )
    try:
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe", "labels": {names.LABEL_PROXY: "x"}},
        }

        async def enforced() -> bool:
            out = await api.call("POST", paths.configmaps, probe, tolerate=(422,))
            if out is not None:  # not yet in force: try again
                await api.delete(f"{paths.configmaps}/probe")
                return False
            return True

        await eventually(enforced, "the admission policy in force", timeout=60)
        await api.create(paths.deployments, tei_deployment(paths.ns))
        operator()
        await api.create(paths.proxies, embedding_proxy(paths.ns))

        async def failed_and_polled() -> Obj | None:
            proxy = await api.get(f"{paths.proxies}/tei")
            cond = condition(proxy, names.CONFIG_APPLIED)
            polled = "podsReady" in ((proxy or {}).get("status") or {})
            return cond if cond.get("reason") == "WriteFailed" and polled else None

        cond = await eventually(failed_and_polled, "ConfigApplied WriteFailed", timeout=60)
        assert cond["status"] == "False" and "ValidatingAdmissionPolicy" in cond["message"]
        proxy = await api.get(f"{paths.proxies}/tei")
        assert "configVersion" not in proxy["status"]
        # The pods' poll (every 0.5 s here) has run since, and left it so.
        assert condition(proxy, names.CONFIG_APPLIED)["reason"] == "WriteFailed"
        assert await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}") is None
    finally:
        await api.delete(f"{bindings}/{policy}")
        await api.delete(f"{vap}/{policy}")

    async def written() -> Obj | None:
        cond = condition(await api.get(f"{paths.proxies}/tei"), names.CONFIG_APPLIED)
        return cond if cond.get("reason") == "NoReadyPods" else None

    cond = await eventually(written, "the ConfigMap written once the policy is gone", timeout=90)
    assert "is written" in cond["message"]
    assert await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}") is not None


async def test_delete_leaves_a_users_own_container_of_the_sidecars_name(
    api: Api, paths: Paths, operator: Any
) -> None:
    """Nothing was injected (NameConflict, TargetHasNoContainers): release touches nothing. And
    where taking out what was injected leaves an invalid Deployment (the user removed their own
    container since), the EmbeddingProxy still goes: a 422 is not retried."""
    users_own = {"name": names.SIDECAR_NAME, "image": "users-own:1"}
    beside = tei_deployment(paths.ns)
    beside["spec"]["template"]["spec"]["containers"].append(users_own)
    alone = tei_deployment(paths.ns, name="solo")
    alone["spec"]["template"]["spec"]["containers"] = [users_own]
    originals = [await api.create(paths.deployments, d) for d in (beside, alone)]
    await api.create(paths.deployments, tei_deployment(paths.ns, name="bare"))
    operator()
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    await api.create(paths.proxies, embedding_proxy(paths.ns, name="solo", target="solo"))
    bare = embedding_proxy(paths.ns, name="bare", target="bare", sidecar={"mode": "Container"})
    await api.create(paths.proxies, bare)
    await eventually(
        lambda: _sidecar_in_containers(api, f"{paths.deployments}/bare"), "the sidecar in bare"
    )
    remove_tei = [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "tei"},
        {"op": "remove", "path": "/spec/template/spec/containers/0"},
    ]
    await api.json_patch(f"{paths.deployments}/bare", remove_tei)
    for name, reason in (
        ("tei", "NameConflict"),
        ("solo", "TargetHasNoContainers"),
        ("bare", "TargetHasNoContainers"),
    ):

        async def refused(name: str = name, reason: str = reason) -> Obj | None:
            cond = condition(await api.get(f"{paths.proxies}/{name}"), names.SIDECAR_INJECTED)
            return cond if cond.get("reason") == reason else None

        await eventually(refused, f"SidecarInjected {reason}", timeout=60)
        await api.delete(f"{paths.proxies}/{name}")

    async def gone() -> bool:
        return not await api.items(paths.proxies)

    await eventually(gone, "both EmbeddingProxies released", timeout=60)
    for original in originals:
        dep = await api.get(f"{paths.deployments}/{original['metadata']['name']}")
        assert dep["spec"]["template"] == original["spec"]["template"]
        assert dep["metadata"]["generation"] == original["metadata"]["generation"]
    # Left as it is: without the sidecar it would have no container.
    assert sidecar(await api.get(f"{paths.deployments}/bare"), "containers") is not None


async def _sidecar_in_containers(api: Api, path: str) -> bool:
    dep = await api.get(path)
    return sidecar(dep, "containers") is not None
