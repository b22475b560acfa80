"""A Kubernetes API for operator tests: kmock's emulator over real HTTP on loopback, with the
bookkeeping a real API server does on writes (uid, creationTimestamp, resourceVersion, generation),
which kopf and the operator rely on; and a small client for the test's own reads and writes.

What the emulator does not do, and the tests therefore do not exercise: strategic-merge and
server-side-apply patches (it merges every patch as a JSON merge patch, so the operator sends
JSON Patch and merge patches only), label/field selectors (the operator filters pods itself),
schema validation, defaulting and CEL rules of the CRD (tested apart against the schema), and
listing cluster-scoped namespaces (so the operator runs with --all-namespaces here)."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jsonpatch
import kmock
from kmock._internal import dicts

from embedding_proxy_operator import names

Obj = dict[str, Any]
T = TypeVar("T")

RESOURCES: dict[str, tuple[str, bool, set[str]]] = {
    # kopf waits for namespaces to be served before it watches anything, even cluster-wide.
    "v1/namespaces": ("Namespace", False, set()),
    "v1/events": ("Event", True, set()),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/pods": ("Pod", True, {"status"}),
    "v1/secrets": ("Secret", True, set()),
    "apps/v1/deployments": ("Deployment", True, {"status", "scale"}),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, set()),
    "embeddingproxy.io/v1alpha1/embeddingproxies": ("EmbeddingProxy", True, {"status"}),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, {"status"}),
}
VERBS = {"get", "list", "watch", "create", "patch", "delete"}


class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator, stamping objects on writes as an API server does."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1000)
        self._last_version = 999
        self._server_version = ("1", "30")
        self["get /version"] << (lambda: self._version())
        for key, (kind, namespaced, subresources) in RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, subresources=subresources, verbs=VERBS
            )

    async def _serve_list(self, request: kmock.Request) -> Any:
        # A real resourceVersion for the list, so that a watch can start from it.
        payload = await super()._serve_list(request)
        payload["metadata"]["resourceVersion"] = str(self._last_version)
        return payload

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        # The emulator starts every watch with all objects as ADDED; a real server sends only
        # what changed after the resourceVersion asked for. kopf relies on that.
        since = request.params.get("resourceVersion", "")
        since_int = int(since) if since.isdigit() else 0
        async for item in super()._serve_watch(request):
            if isinstance(item, dict):
                rv = item.get("object", {}).get("metadata", {}).get("resourceVersion", "")
                if rv.isdigit() and int(rv) <= since_int:
                    continue
            yield item

    def report_version(self, major: str, minor: str) -> None:
        """What /version says (the operator decides on native sidecars by it)."""
        self._server_version = (major, minor)

    def _version(self) -> Obj:
        major, minor = self._server_version
        return {"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0"}

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict | list):
            self._stamp(request)
        return await super()._handle(request)

    def _stamp(self, request: kmock.Request) -> None:
        self._last_version = next(self._versions)
        rv = str(self._last_version)
        data = request.data
        if request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["resourceVersion"] = rv
            meta["generation"] = 1
        elif request.action == kmock.action.UPDATE:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = dict(self.objects[key].raw)
            try:
                after = dicts.patch_dict(current, data)
            except jsonpatch.JsonPatchTestFailed as e:
                # As a real API server answers a failed `test`: 422, which kopf understands.
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e
            except Exception:
                return  # the emulator answers with the error itself
            changes: Obj = {"resourceVersion": rv}
            if request.subresource != "status" and after.get("spec") != current.get("spec"):
                changes["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
            if isinstance(data, dict):
                data.setdefault("metadata", {}).update(changes)
            else:
                for k, v in changes.items():
                    data.append({"op": "add", "path": f"/metadata/{k}", "value": v})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The test's own client: what `kubectl` would do."""

    def __init__(self, base: str) -> None:
        self.session = aiohttp.ClientSession(base_url=base.rstrip("/") + "/")

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Obj | None:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.session.request(
            method, path.lstrip("/"), data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status == 404:
                return None
            if resp.status >= 400:
                raise AssertionError(f"{method} {path}: {resp.status} {text[:300]}")
            return json.loads(text) if text else {}

    async def get(self, path: str) -> Obj | None:
        return await self.call("GET", path)

    async def create(self, collection: str, obj: Obj) -> Obj:
        out = await self.call("POST", collection, obj)
        assert out is not None
        return out

    async def merge(self, path: str, patch: Obj) -> Obj | None:
        return await self.call("PATCH", path, patch, "application/merge-patch+json")

    async def json_patch(self, path: str, ops: list[Obj]) -> Obj | None:
        return await self.call("PATCH", path, ops, "application/json-patch+json")

    async def delete(self, path: str) -> Obj | None:
        return await self.call("DELETE", path)

    async def items(self, collection: str) -> list[Obj]:
        out = await self.get(collection)
        return list((out or {}).get("items") or [])


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 15.0
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server.rstrip("/")}}],
                "users": [{"name": "tester", "user": {}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


OPERATOR = str(Path(sys.executable).parent / "embedding-proxy-operator")


def operator_environment(kubeconfig: Path, **env: str) -> dict[str, str]:
    """The operator's environment in tests: this API, and short intervals."""
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "EMBEDDING_PROXY_OPERATOR_STATUS_SECONDS": "0.5",
        "EMBEDDING_PROXY_OPERATOR_WATCH_SECONDS": "20",
        "EMBEDDING_PROXY_OPERATOR_MAX_RETRY_SECONDS": "1",
        "EMBEDDING_PROXY_OPERATOR_API_TIMEOUT_SECONDS": "5",
        "EMBEDDING_PROXY_OPERATOR_SCRAPE_TIMEOUT_SECONDS": "1",
        **env,
    }


def start_operator(kubeconfig: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """The operator as it runs in its container: the console script, its own process."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [OPERATOR, "--all-namespaces", "--standalone", "--verbose"],
            env=operator_environment(kubeconfig, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_proxy(config: Path, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    """A real proxy on loopback, standing in for a pod's sidecar; returns once /metrics answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedding_proxy.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError("the proxy's /metrics did not answer within 20 s")


# ---- reading what the operator wrote ---------------------------------------------------------


def pod_spec(deployment: Obj | None) -> Obj:
    return (deployment or {}).get("spec", {}).get("template", {}).get("spec", {})


def sidecar(deployment: Obj | None, field: str = "initContainers") -> Obj | None:
    for c in pod_spec(deployment).get(field) or []:
        if c.get("name") == names.SIDECAR_NAME:
            return c
    return None


def condition(obj: Obj | None, type_: str) -> Obj:
    for c in (obj or {}).get("status", {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def ready_pod(name: str, ip: str, namespace: str = "demo") -> Obj:
    """A ready TEI pod with the sidecar, as the kubelet would report it, at `ip`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "tei"}},
        "spec": {
            "initContainers": [{"name": names.SIDECAR_NAME, "image": "embedding-proxy:0.1.0"}],
            "containers": [{"name": "tei", "image": "tei"}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
