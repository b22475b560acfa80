"""The operator as the chart installs it (whose allow list holds only the chart's own image
repository), on the real API server: an EmbeddingProxy naming another image, however it asks,
gets `Ready=False ImageNotAllowed` and a Warning, and the operator sends nothing to its
Deployment; switched to an allowed image it is injected, and switched away again the Deployment
keeps the allowed sidecar."""

from __future__ import annotations

import pytest
from harness import Api, Operators, Paths, condition, eventually, sidecar, tei_deployment
from harness import embedding_proxy as proxy_object
from installed import Account, render
from tests.helpers.control_plane import ControlPlane

from embedding_proxy_operator.model import names

FOREIGN = "attacker.example/miner:1"
# The chart's image.repository is `embedding-proxy`: a longer name is another repository.
LOOKALIKE = "embedding-proxy-evil:1"


def operator_patches_of_the_deployment(cluster: ControlPlane, account: Account, ns: str) -> int:
    return sum(
        1
        for e in cluster.audit_events(account.username)
        if e["verb"] == "patch"
        # One event per request, logged before it is served (ResponseComplete may come after
        # the test has seen the patch's effect).
        and e.get("stage") == "RequestReceived"
        and (e.get("objectRef") or {}).get("resource") == "deployments"
        and (e.get("objectRef") or {}).get("namespace") == ns
    )


async def refused(api: Api, paths: Paths, image: str) -> None:
    async def says_so() -> bool:
        cr = await api.get(f"{paths.proxies}/tei")
        ready = condition(cr, names.READY)
        return ready.get("reason") == "ImageNotAllowed" and image in ready.get("message", "")

    await eventually(says_so, f"Ready=False ImageNotAllowed for {image}", timeout=60)

    async def warned() -> bool:
        return any(
            e.get("type") == "Warning"
            and e.get("reason") == "ImageNotAllowed"
            and image in e.get("message", "")
            for e in await api.items(paths.events)
        )

    await eventually(warned, f"a Warning event for {image}", timeout=60)


@pytest.mark.parametrize("image", [FOREIGN, LOOKALIKE])
async def test_an_image_off_the_allow_list_touches_nothing(
    image: str,
    cluster: ControlPlane,
    cluster_account: Account,
    api: Api,
    paths: Paths,
    operator: Operators,
) -> None:
    assert cluster_account.env["EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES"] == "embedding-proxy"
    before = await api.create(paths.deployments, tei_deployment(paths.ns))
    operator()
    hostile = proxy_object(
        paths.ns,
        sidecar={"image": image},
        auth={"apiKeysSecretRef": {"name": "any-secret", "key": "keys"}},
    )
    await api.create(paths.proxies, hostile)
    await refused(api, paths, image)

    dep = await api.get(f"{paths.deployments}/tei") or {}
    # (Its status moves with the controller-manager; its spec is the user's alone.)
    assert dep["metadata"]["generation"] == before["metadata"]["generation"]
    assert dep["spec"]["template"] == before["spec"]["template"]
    assert sidecar(dep) is None and sidecar(dep, "containers") is None
    assert await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}") is None
    assert operator_patches_of_the_deployment(cluster, cluster_account, paths.ns) == 0

    # An allowed image is injected ...
    allowed = "embedding-proxy:0.1.0"
    await api.merge(f"{paths.proxies}/tei", {"spec": {"sidecar": {"image": allowed}}})

    async def injected() -> dict | None:
        dep = await api.get(f"{paths.deployments}/tei")
        return dep if (sidecar(dep) or {}).get("image") == allowed else None

    dep = await eventually(injected, "the allowed image injected", timeout=60)
    patched = operator_patches_of_the_deployment(cluster, cluster_account, paths.ns)
    assert patched >= 1

    # ... and a switch back to a foreign one leaves the Deployment as it is.
    await api.merge(f"{paths.proxies}/tei", {"spec": {"sidecar": {"image": image}}})
    await refused(api, paths, image)
    now = await api.get(f"{paths.deployments}/tei") or {}
    assert (sidecar(now) or {}).get("image") == allowed
    assert operator_patches_of_the_deployment(cluster, cluster_account, paths.ns) == patched


async def test_one_value_names_the_operators_image_and_the_sidecar_it_injects(
    cluster_account: Account, api: Api, paths: Paths, operator: Operators
) -> None:
    """The chart's image.repository alone: the operator runs `<repository>-operator`, allows
    `<repository>` and injects it into an EmbeddingProxy that names no image."""
    repository = "registry.example.com/ml/embedding-proxy"
    rendered = render("ep", "embedding-proxy-system", "--set", f"image.repository={repository}")
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{repository}-operator:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    chosen = {k: v for k, v in env.items() if k.endswith(("_SIDECAR_IMAGE", "_ALLOWED_IMAGES"))}
    assert chosen == {
        "EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE": f"{repository}:0.1.0",
        "EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES": repository,
    }

    await api.create(paths.deployments, tei_deployment(paths.ns))
    operator(**chosen)
    created = await api.create(paths.proxies, proxy_object(paths.ns))
    # Nothing is filled in by the API server: the operator's setting decides.
    assert "image" not in (created["spec"].get("sidecar") or {})

    async def injected() -> dict | None:
        dep = await api.get(f"{paths.deployments}/tei")
        return dep if (sidecar(dep) or {}).get("image") == f"{repository}:0.1.0" else None

    await eventually(injected, "the chart's sidecar image injected", timeout=60)
