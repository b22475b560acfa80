"""The operator as the Helm chart installs it: the chart's own arguments, environment and RBAC,
run against the emulator, with every request the operator sends recorded and judged against the
rules the chart grants."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import yaml
from harness import OPERATOR, VERBS, Api, Cluster, operator_environment
from tests.helpers.tools import require_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-proxy"
TEST_AGENT = "embedding-proxy-tests"

Obj = dict[str, Any]
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# Paths every authenticated client may read (Kubernetes' system:discovery and
# system:public-info-viewer roles): API discovery and the server's version.
DISCOVERY_PREFIXES = ("/api", "/apis", "/version")


def render(*flags: str, namespace: str = "embedding-proxy-system") -> list[Obj]:
    result = subprocess.run(
        [
            require_helm(),
            "template",
            "embedding-proxy",
            str(CHART),
            "--namespace",
            namespace,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@dataclass
class Install:
    """What the chart renders for the operator."""

    args: list[str]
    env: dict[str, str]
    grants: set[Grant]
    probe_path: str
    health_port: int


def install(health_port: int, *flags: str) -> Install:
    objects = render("--set", f"operator.healthPort={health_port}", *flags)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["embedding-proxy-operator"]
    # Only literal values; the downward API's are the test's to fill in, as the kubelet does.
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    grants: set[Grant] = set()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.update((group, resource, verb) for verb in rule["verbs"])
    return Install(
        args=list(container["args"]),
        env=env,
        grants=grants,
        probe_path=container["livenessProbe"]["httpGet"]["path"],
        health_port=health_port,
    )


class ChartCluster(Cluster):
    """The emulator, also serving kopf's peering resources (as the chart's crds/ install them)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for plural, kind, namespaced in [
            ("clusterkopfpeerings", "ClusterKopfPeering", False),
            ("kopfpeerings", "KopfPeering", True),
        ]:
            self.resources[f"kopf.dev/v1/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, subresources=set(), verbs=VERBS
            )

    def add_cluster_peering(self, name: str) -> None:
        """The ClusterKopfPeering the chart creates; stored directly, since the emulator files a
        cluster-scoped object created over HTTP under a namespace of None."""
        key = (kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"), None, name)
        self.objects[key] = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name, "uid": "peering", "resourceVersion": "1"},
        }

    def peering_status(self, name: str) -> Obj:
        """The peers recorded in the ClusterKopfPeering: identity -> priority, lifetime, ..."""
        key = (kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"), None, name)
        return dict(self.objects[key].raw.get("status") or {})

    def sent_by_operator(self) -> list[kmock.Request]:
        """Every request so far that did not come from the test's own client."""
        return [r for r in self if r.headers.get("User-Agent") != TEST_AGENT]


class TestApi(Api):
    """The test's client, told apart from the operator's requests by its User-Agent."""

    __test__ = False

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.session.headers["User-Agent"] = TEST_AGENT


def grant_needed(request: kmock.Request) -> Grant | None:
    """The RBAC grant a request needs; None for a discovery path every client may read."""
    if request.resource is None or not request.resource.plural:
        path = request.url.path
        assert path.startswith(DISCOVERY_PREFIXES) and path.count("/") <= 3, (
            f"{request.method} {path}: neither a resource nor discovery"
        )
        return None
    resource = request.resource.plural or ""
    if request.subresource:
        resource = f"{resource}/{request.subresource}"
    action = request.action
    if action == kmock.action.WATCH:
        verb = "watch"
    elif action == kmock.action.LIST:
        verb = "list"
    elif action == kmock.action.FETCH:
        verb = "get"
    elif action == kmock.action.CREATE:
        verb = "create"
    elif action == kmock.action.DELETE:
        verb = "delete" if request.name else "deletecollection"
    elif request.method == kmock.method.PUT:
        verb = "update"
    else:
        verb = "patch"
    return (request.resource.group or "", resource, verb)


def grants_used(requests: Iterable[kmock.Request]) -> dict[Grant, str]:
    """Each grant the requests needed, with one request that needed it (for messages)."""
    used: dict[Grant, str] = {}
    for r in requests:
        grant = grant_needed(r)
        if grant is not None:
            used.setdefault(grant, f"{r.method.value} {r.url.path_qs}")
    return used


def start(
    args: list[str], kubeconfig: Path, log: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """The console script with exactly the chart's arguments, its log at debug level."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [OPERATOR, *args, "--verbose"],
            env=operator_environment(kubeconfig, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then wait without blocking the event loop: the emulator runs on it, and a peer's
    last act is to take itself out of the peering object."""
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
        except TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
    return proc.returncode
