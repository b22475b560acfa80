"""kopf handlers: read from the API, call the pure functions, write the results, say what happened.

- An EmbeddingProxy created, changed or found at start-up is reconciled: its ConfigMap written, the
  sidecar put into its target Deployment, status updated.
- Every event of a targeted Deployment reconciles its EmbeddingProxy again: a Deployment created
  later gets the sidecar, a sidecar removed by hand comes back.
- A daemon per EmbeddingProxy asks the ready pods' proxies which config they run.
- Deleting an EmbeddingProxy takes out what the operator added, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from . import kube, names, pods, render
from .conditions import Fact, merge, now, without_times
from .kube import ApiError, Kube
from .reconcile import Plan, config_fact, plan
from .settings import Options, native_from_version, retry_delay
from .spec import SpecError, parse

Obj = dict[str, Any]
PATCH_ATTEMPTS = 3


# ---- start-up and credentials ---------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options = Options.from_env(os.environ)
    memo.options = options
    memo.locks = {}
    memo.notices = {}
    memo.kube = None
    memo.native = None
    memo.scraper = None
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=names.PERSISTENCE_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = options.watch_seconds
    settings.watching.client_timeout = options.watch_seconds + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = options.api_timeout_seconds * 3
    settings.posting.reporting_component = names.FIELD_MANAGER
    # Events are posted for warnings and changes; kopf's own per-handler chatter stays in logs.
    settings.posting.level = logging.WARNING


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info: kopf.ConnectionInfo | None = None
    try:
        info = kopf.login_via_client(**kwargs)
    except kopf.LoginError:
        info = None
    info = info or kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    memo.connection = info
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "kube", None) is not None:
        await memo.kube.close()
    if getattr(memo, "scraper", None) is not None:
        await memo.scraper.close()


def client(memo: kopf.Memo) -> Kube:
    """The API client for the current credentials (a re-login gives a new one)."""
    if memo.kube is None or memo.kube_info is not memo.connection:
        if memo.kube is not None:
            asyncio.get_running_loop().create_task(memo.kube.close())
        memo.kube = Kube(memo.connection, memo.options.api_timeout_seconds)
        memo.kube_info = memo.connection
    return memo.kube


async def native_supported(memo: kopf.Memo) -> bool:
    if memo.native is None:
        choice = memo.options.native_sidecars
        if choice != "auto":
            memo.native = choice == "true"
        else:
            version = await client(memo).request("GET", "/version")
            memo.native = native_from_version(
                str(version.get("major", "0")), str(version.get("minor", "0"))
            )
    return bool(memo.native)


def lock(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Lock:
    return memo.locks.setdefault((namespace, name), asyncio.Lock())


# ---- which EmbeddingProxy targets which Deployment ------------------------------------------


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def proxies_by_target(
    namespace: str, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str] | None:
    target = (spec.get("targetRef") or {}).get("name")
    return {(namespace, target): name} if target else None


# ---- reconciliation -------------------------------------------------------------------------


@kopf.on.resume(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.create(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.update(names.GROUP, names.VERSION, names.PLURAL)
async def reconcile_proxy(
    namespace: str,
    name: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    memo: kopf.Memo,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    try:
        old_target = ((old or {}).get("spec") or {}).get("targetRef", {}).get("name")
        new_target = ((new or {}).get("spec") or {}).get("targetRef", {}).get("name")
        if old_target and old_target != new_target:
            await release_target(memo, namespace, name, old_target, logger)
        await reconcile(memo, namespace, name, logger)
    except ApiError as e:
        delay = retry_delay(retry, memo.options.max_retry_seconds)
        raise kopf.TemporaryError(f"Kubernetes API: {e}; retrying in {delay:.0f} s", delay) from e


@kopf.on.event("apps", "v1", "deployments")
async def target_changed(
    namespace: str,
    name: str,
    proxies_by_target: kopf.Index[tuple[str, str], str],
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    for proxy_name in list(proxies_by_target.get((namespace, name), [])):
        try:
            await reconcile(memo, namespace, proxy_name, logger)
        except ApiError as e:
            # The next event of either object, or the proxy's own retry, tries again.
            logger.warning("reconciling %s/%s after a Deployment event: %s", namespace, name, e)


async def reconcile(memo: kopf.Memo, namespace: str, name: str, logger: logging.Logger) -> None:
    api = client(memo)
    async with lock(memo, namespace, name):
        proxy = await api.get(kube.proxy_path(namespace, name))
        if proxy is None or proxy["metadata"].get("deletionTimestamp"):
            return
        target = ((proxy.get("spec") or {}).get("targetRef") or {}).get("name", "")
        native = await native_supported(memo)
        deployment = await api.get(kube.deployment_path(namespace, target)) if target else None
        result = plan(proxy, deployment, native)
        facts = list(result.facts)

        if result.configmap is not None:
            change = await write_configmap(api, result.configmap)
            if change:
                post(memo, proxy, "Normal", "ConfigWritten", _config_message(change, result))

        failure: ApiError | None = None
        for attempt in range(PATCH_ATTEMPTS):
            if not result.ops or deployment is None:
                break
            try:
                before = render.find_sidecar(deployment)
                await api.request(
                    "PATCH",
                    kube.deployment_path(namespace, target),
                    result.ops,
                    kube.JSON_PATCH,
                )
                post(memo, proxy, "Normal", *_injection_event(before, proxy, result, target))
                break
            except ApiError as e:
                if not e.conflict or attempt == PATCH_ATTEMPTS - 1:
                    failure = e
                    break
                # Someone changed the Deployment since it was read: read again, plan again.
                deployment = await api.get(kube.deployment_path(namespace, target))
                result = plan(proxy, deployment, native)
                facts = list(result.facts)
        if failure is not None:
            message = f"patching Deployment {target!r} failed: {failure}"
            facts = [f for f in facts if f.type != names.SIDECAR_INJECTED]
            facts.append(Fact(names.SIDECAR_INJECTED, "False", "PatchFailed", message))

        for notice in result.warnings:
            post(memo, proxy, "Warning", notice.reason, notice.message, once=True)

        status = dict(proxy.get("status") or {})
        if result.version and status.get("configVersion") != result.version:
            # Until the pods report the new version, it is not applied.
            facts.append(config_fact(status.get("podsReady", 0), 0, result.version))
        await write_status(api, proxy, facts, _summary(result, deployment))
        if failure is not None:
            raise failure


def _summary(result: Plan, deployment: Mapping[str, Any] | None) -> Obj:
    out: Obj = {}
    if result.configmap is not None:
        out["configMapName"] = result.configmap["metadata"]["name"]
        out["configVersion"] = result.version
    if result.mode:
        out["sidecarMode"] = result.mode
    dep_status = (deployment or {}).get("status") or {}
    out["replicas"] = int(dep_status.get("replicas", 0)) if deployment else 0
    out["readyReplicas"] = int(dep_status.get("readyReplicas", 0)) if deployment else 0
    return out


def _config_message(change: str, result: Plan) -> str:
    if change == "created":
        return f"wrote config {result.version} to ConfigMap {result.configmap['metadata']['name']}"
    return (
        f"config {result.version} written; batching and limits apply live, "
        "other settings roll the pods"
    )


def _injection_event(
    before: tuple[str, Obj] | None, proxy: Mapping[str, Any], result: Plan, target: str
) -> tuple[str, str]:
    if before is None:
        injected = _condition_status(proxy, names.SIDECAR_INJECTED) == "True"
        if injected:
            return "SidecarRestored", f"the sidecar was gone from Deployment {target!r}: put back"
        return "SidecarInjected", f"added the sidecar ({result.mode}) to Deployment {target!r}"
    return "SidecarUpdated", f"updated the sidecar in Deployment {target!r}; its pods roll"


def _condition_status(proxy: Mapping[str, Any], type_: str) -> str | None:
    for c in (proxy.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


async def write_configmap(api: Kube, wanted: Obj) -> str | None:
    """Create or update the ConfigMap; 'created', 'updated' or None when it was already so."""
    meta = wanted["metadata"]
    path = kube.configmap_path(meta["namespace"], meta["name"])
    current = await api.get(path)
    if current is None:
        try:
            await api.request("POST", kube.configmap_path(meta["namespace"]), wanted)
            return "created"
        except ApiError as e:
            if e.status != 409:
                raise
            current = await api.get(path) or {}
    if render.covers(current, {"data": wanted["data"], "metadata": {"labels": meta["labels"]}}):
        return None
    patch = {"data": wanted["data"], "metadata": {"labels": meta["labels"]}}
    if "ownerReferences" in meta:
        patch["metadata"]["ownerReferences"] = meta["ownerReferences"]
    await api.request("PATCH", path, patch, kube.MERGE_PATCH)
    return "updated"


async def write_status(
    api: Kube, proxy: Mapping[str, Any], facts: list[Fact], fields: Mapping[str, Any]
) -> None:
    """Merge facts into the conditions and write status, only when something changed."""
    meta = proxy["metadata"]
    current = dict(proxy.get("status") or {})
    generation = meta.get("generation")
    conditions = merge(current.get("conditions") or [], facts, generation, now())
    wanted = {**current, **fields, "conditions": conditions}
    if generation is not None:
        wanted["observedGeneration"] = generation
    same = {k: v for k, v in wanted.items() if k != "conditions"} == {
        k: v for k, v in current.items() if k != "conditions"
    } and without_times(conditions) == without_times(current.get("conditions") or [])
    if same:
        return
    await api.request(
        "PATCH",
        kube.proxy_path(meta["namespace"], meta["name"]) + "/status",
        {"status": wanted},
        kube.MERGE_PATCH,
    )


def post(
    memo: kopf.Memo,
    proxy: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    once: bool = False,
) -> None:
    """An Event on the EmbeddingProxy; with `once`, only when it is news (warnings would
    otherwise repeat on every Deployment event)."""
    if once:
        key = (proxy["metadata"]["namespace"], proxy["metadata"]["name"])
        seen: set[tuple[str, str]] = memo.notices.setdefault(key, set())
        if (reason, message) in seen:
            return
        seen.add((reason, message))
    kopf.event(dict(proxy), type=type_, reason=reason, message=message)


# ---- deletion and retargeting ---------------------------------------------------------------


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL)
async def release(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    target = (spec.get("targetRef") or {}).get("name")
    try:
        async with lock(memo, namespace, name):
            if target:
                await release_target(memo, namespace, name, target, logger)
            await client(memo).delete(kube.configmap_path(namespace, names.configmap_name(name)))
    except ApiError as e:
        delay = retry_delay(retry, memo.options.max_retry_seconds)
        raise kopf.TemporaryError(f"Kubernetes API: {e}; retrying in {delay:.0f} s", delay) from e
    memo.notices.pop((namespace, name), None)
    memo.locks.pop((namespace, name), None)


async def release_target(
    memo: kopf.Memo, namespace: str, name: str, target: str, logger: logging.Logger
) -> None:
    """Take the sidecar out of a Deployment this EmbeddingProxy injected (only that one)."""
    api = client(memo)
    path = kube.deployment_path(namespace, target)
    for attempt in range(PATCH_ATTEMPTS):
        deployment = await api.get(path)
        if deployment is None:
            return
        owner = render.owner_of(deployment)
        if owner is not None and owner != name:
            return
        if owner is None and render.find_sidecar(deployment) is None:
            return
        ops = render.remove_ops(deployment)
        if not ops:
            return
        try:
            await api.request("PATCH", path, ops, kube.JSON_PATCH)
            logger.info("removed the sidecar from Deployment %s/%s", namespace, target)
            return
        except ApiError as e:
            if not e.conflict or attempt == PATCH_ATTEMPTS - 1:
                raise


# ---- observing the pods ---------------------------------------------------------------------


@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_timeout=5.0)
async def observe(
    stopped: kopf.DaemonStopped,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Ask the ready pods' proxies which config they run; count them into status."""
    while not stopped:
        interval = memo.options.status_seconds
        try:
            interval = await observe_once(memo, namespace, name) or interval
        except ApiError as e:
            logger.warning("observing pods of %s/%s: %s", namespace, name, e)
        await stopped.wait(interval)


async def observe_once(memo: kopf.Memo, namespace: str, name: str) -> float | None:
    api = client(memo)
    proxy = await api.get(kube.proxy_path(namespace, name))
    if proxy is None or proxy["metadata"].get("deletionTimestamp"):
        return None
    target = ((proxy.get("spec") or {}).get("targetRef") or {}).get("name", "")
    deployment = await api.get(kube.deployment_path(namespace, target)) if target else None
    if deployment is None:
        return None
    try:
        spec = parse(proxy.get("spec") or {})
    except SpecError:
        return None
    version = render.proxy_config(spec)["version"]
    selector = (deployment.get("spec") or {}).get("selector") or {}
    listing = await api.request(
        "GET", kube.pods_path(namespace), params={"labelSelector": pods.selector_query(selector)}
    )
    ready = pods.proxy_pods(listing.get("items") or [], selector)
    texts = await scrape_all(memo, [pods.metrics_url(p, spec.sidecar.ports.metrics) for p in ready])
    versions = pods.config_versions(texts)
    current = sum(1 for v in versions if v == version)
    async with lock(memo, namespace, name):
        fresh = await api.get(kube.proxy_path(namespace, name))
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
        fields = {
            "podsReady": len(ready),
            "podsOnConfigVersion": current,
            "replicas": int((deployment.get("status") or {}).get("replicas", 0)),
            "readyReplicas": int((deployment.get("status") or {}).get("readyReplicas", 0)),
        }
        await write_status(api, fresh, [config_fact(len(ready), current, version)], fields)
    if spec.autoscaling.enabled:
        return float(spec.autoscaling.poll_seconds)
    return None


async def scrape_all(memo: kopf.Memo, urls: list[str]) -> list[str | None]:
    """GET each proxy's /metrics at once; None for a pod that did not answer in time. A session
    of its own: the API credentials are never sent to pods."""
    if memo.scraper is None:
        memo.scraper = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=memo.options.scrape_timeout_seconds)
        )
    session: aiohttp.ClientSession = memo.scraper

    async def one(url: str) -> str | None:
        try:
            async with session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError):
            return None

    return list(await asyncio.gather(*(one(u) for u in urls)))
