"""The operator's end-to-end tests run against the real API server of the session's control plane
(tests/helpers/control_plane.py): the CRDs applied, one namespace per test, the test's own client
acting as the cluster admin, and a stand-in for the kubelet (there is none): it binds the pods the
ReplicaSet controller makes to a Node and writes their status (podIP, Ready), and finishes the
pods being deleted. Real proxy processes listen on the loopback addresses given to pods whose
proxy must answer."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from tests.helpers.control_plane import ControlPlane
from tests.helpers.processes import free_port

from embedding_proxy_operator.model import names

Obj = dict[str, Any]
T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CRDS = [ROOT / "manifests" / "crd.yaml"]
NODE = "node-1"
TEST_AGENT = "embedding-proxy-tests"

# KEDA's ScaledObject, served as KEDA's CRD serves it (group, version, scope, subresources); the
# shape of what the operator writes is checked against KEDA's schema by the tests themselves.
KEDA_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh",
        "scope": "Namespaced",
        "names": {
            "kind": "ScaledObject",
            "listKind": "ScaledObjectList",
            "plural": "scaledobjects",
            "singular": "scaledobject",
            "shortNames": ["so"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}


def install_crds(plane: ControlPlane) -> None:
    for path in CRDS:
        plane.kubectl("apply", "-f", str(path))
    plane.apply(KEDA_CRD)
    plane.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/embeddingproxies.embeddingproxy.io",
        "crd/scaledobjects.keda.sh",
    )


def add_node(plane: ControlPlane) -> None:
    """A Node for pods to be bound to; Ready, as its kubelet would report it."""
    plane.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    status = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }
    }
    plane.kubectl(
        "patch", "node", NODE, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


def create_namespace(plane: ControlPlane, hint: str) -> str:
    """A namespace of the test's own: its name from the test's, made unique."""
    base = "".join(c if c.isalnum() else "-" for c in hint.lower()).strip("-")
    name = f"{base[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


# ---- the test's own client ---------------------------------------------------------------------


class Api:
    """The test's client, as the cluster admin: what `kubectl` would do, without blocking the
    event loop the test's other tasks run on."""

    def __init__(self, plane: ControlPlane) -> None:
        config = yaml.safe_load(plane.kubeconfig.read_text())
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        self.session = aiohttp.ClientSession(
            base_url=cluster["server"].rstrip("/") + "/",
            connector=aiohttp.TCPConnector(ssl=context),
            headers={"User-Agent": TEST_AGENT},
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        missing_ok: bool = True,
        tolerate: tuple[int, ...] = (),
    ) -> Obj | None:
        """The answer's JSON; None for 404 (with `missing_ok`) and the `tolerate`d statuses."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.session.request(
            method, path.lstrip("/"), data=data, headers=headers, params=params
        ) as resp:
            text = await resp.text()
            if (resp.status == 404 and missing_ok) or resp.status in tolerate:
                return None
            if resp.status >= 400:
                raise AssertionError(f"{method} {path}: {resp.status} {text[:500]}")
            return json.loads(text) if text else {}

    async def get(self, path: str) -> Obj | None:
        return await self.call("GET", path)

    async def create(self, collection: str, obj: Obj) -> Obj:
        out = await self.call("POST", collection, obj, missing_ok=False)
        assert out is not None
        return out

    async def merge(self, path: str, patch: Obj) -> Obj | None:
        return await self.call("PATCH", path, patch, "application/merge-patch+json")

    async def json_patch(self, path: str, ops: list[Obj]) -> Obj | None:
        return await self.call("PATCH", path, ops, "application/json-patch+json")

    async def delete(self, path: str, grace: int | None = None) -> Obj | None:
        params = None if grace is None else {"gracePeriodSeconds": str(grace)}
        return await self.call("DELETE", path, params=params)

    async def items(self, collection: str, **params: str) -> list[Obj]:
        out = await self.call("GET", collection, params=params or None)
        return list((out or {}).get("items") or [])


class Paths:
    """The API paths of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        self.proxies = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{namespace}/{names.PLURAL}"
        self.configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
        self.secrets = f"/api/v1/namespaces/{namespace}/secrets"
        self.events = f"/api/v1/namespaces/{namespace}/events"
        self.pods = f"/api/v1/namespaces/{namespace}/pods"
        self.hpas = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
        self.scaled_objects = f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0
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


# ---- the kubelet's part ------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_status(ip: str) -> Obj:
    """A pod's status as a kubelet writes it once every container is up and ready."""
    now = _now()
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "127.0.0.1",
        "startTime": now,
        "conditions": conditions,
    }


class Kubelet:
    """Runs the namespace's pods as a kubelet on NODE would: binds each new pod, gives it the
    next free one of the address slots `ips` and reports it Running and Ready; finishes pods
    being deleted and frees their slot. A pod waits while every slot is taken. (An address listed
    twice is two slots: two pods that share one proxy process.)"""

    def __init__(self, api: Api, namespace: str, ips: list[str]) -> None:
        self.api, self.paths, self.ips = api, Paths(namespace), ips
        self.assigned: dict[str, int] = {}  # pod name -> slot

    async def step(self) -> None:
        for pod in await self.api.items(self.paths.pods):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            name, path = meta["name"], f"{self.paths.pods}/{meta['name']}"
            if meta.get("deletionTimestamp"):
                await self.api.delete(path, grace=0)
                self.assigned.pop(name, None)
                continue
            if not spec.get("nodeName"):
                binding = {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
                }
                # A pod deleted meanwhile cannot be bound (409): the next round sees it go.
                if await self.api.call("POST", f"{path}/binding", binding, tolerate=(409,)) is None:
                    continue
            if (pod.get("status") or {}).get("phase") != "Running":
                slot = self.assigned.get(name, self._free())
                if slot is None:
                    continue
                self.assigned[name] = slot
                await self.api.merge(f"{path}/status", {"status": running_status(self.ips[slot])})
        present = {p["metadata"]["name"] for p in await self.api.items(self.paths.pods)}
        for gone in set(self.assigned) - present:
            del self.assigned[gone]

    def _free(self) -> int | None:
        taken = set(self.assigned.values())
        return next((i for i in range(len(self.ips)) if i not in taken), None)

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(0.2)


# ---- the operator as its own process -----------------------------------------------------------

OPERATOR = str(Path(sys.executable).parent / "embedding-proxy-operator")


def operator_environment(kubeconfig: Path, **env: str) -> dict[str, str]:
    """The operator's environment in tests: this API, and short intervals."""
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "EMBEDDING_PROXY_OPERATOR_STATUS_SECONDS": "0.5",
        "EMBEDDING_PROXY_OPERATOR_WATCH_SECONDS": "20",
        "EMBEDDING_PROXY_OPERATOR_MAX_RETRY_SECONDS": "1",
        "EMBEDDING_PROXY_OPERATOR_API_TIMEOUT_SECONDS": "10",
        "EMBEDDING_PROXY_OPERATOR_SCRAPE_TIMEOUT_SECONDS": "1",
        **env,
    }


def start_operator(
    args: list[str], kubeconfig: Path, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """The console script with the given (the chart's) arguments, its log at debug level."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [OPERATOR, *args, "--verbose"],
            env=operator_environment(kubeconfig, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Operators:
    """Starts the operator as the chart runs it, as an `installed.Account` (by default the
    fixture's), each with a pod name and a health port of its own."""

    def __init__(self, account: Any, directory: Path) -> None:
        self.account, self.directory = account, directory
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(
        self, account: Any = None, health_port: int | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        account = account or self.account
        log = self.directory / f"operator-{len(self.started)}.log"
        args = account.args_with_health_port(health_port or free_port())
        proc = start_operator(args, account.kubeconfig, log, {**account.pod_env(), **env})
        self.started.append((proc, log))
        return proc

    def logs(self) -> str:
        return "".join(log.read_text(errors="replace") for _, log in self.started)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """stop_process without blocking the event loop."""
    return await asyncio.to_thread(stop_process, proc, timeout)


def start_proxy(config: Path, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    """A real proxy on loopback, standing in for a pod's sidecar; returns once /metrics answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedding_proxy.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError("the proxy's /metrics did not answer within 30 s")


# ---- reading what the operator wrote -----------------------------------------------------------


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


def tei_deployment(namespace: str, name: str = "tei", replicas: int = 0, port: int = 80) -> Obj:
    """A TEI Deployment as a user writes it. No replicas unless asked: pods are only made where
    a test plays their kubelet."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "tei",
                            "image": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8",
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


def embedding_proxy(namespace: str, name: str = "tei", target: str = "tei", **spec: Any) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targetRef": {"name": target}, **spec},
    }
