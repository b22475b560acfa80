"""The operator as the Helm chart installs it: `helm template` renders the chart, its
ServiceAccount, (Cluster)Roles and bindings are applied to the real API server, and
the operator runs with the chart's arguments and environment and a token of that ServiceAccount.
What it may do is exactly what the chart grants; the audit log shows what it did."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.helpers.control_plane import ControlPlane, forbidden
from tests.helpers.processes import free_port
from tests.helpers.tools import require_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-proxy"

Obj = dict[str, Any]
Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# What the operator's identity is made of; the chart's Deployment itself is the test's to play.
ACCOUNT_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "MutatingWebhookConfiguration",
}


def render(release: str, namespace: str, *flags: str) -> list[Obj]:
    result = subprocess.run(
        # What `helm install` creates: the `helm test` hooks apart.
        [
            require_helm(),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--skip-tests",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def grants_of(objects: Iterable[Obj]) -> set[Grant]:
    grants: set[Grant] = set()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.update((group, resource, verb) for verb in rule["verbs"])
    return grants


@dataclass
class Account:
    """The operator's ServiceAccount as the chart makes it, and how the chart runs the operator."""

    namespace: str
    name: str
    kubeconfig: Path
    args: list[str]
    env: dict[str, str]
    grants: set[Grant]
    probe_path: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def lease_path(self) -> str:
        """The Lease the chart's replicas share (in the release namespace)."""
        name = self.env["EMBEDDING_PROXY_OPERATOR_LEASE_NAME"]
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{name}"

    def args_with_health_port(self, port: int) -> list[str]:
        """The chart's arguments, as rendered with `operator.healthPort=port` (one operator per
        port on this machine, where every pod has its own)."""
        return [
            re.sub(r":\d+/", f":{port}/", a) if a.startswith("--liveness=") else a
            for a in self.args
        ]

    def pod_env(self) -> dict[str, str]:
        """The chart's literal environment, and what the downward API gives a pod of its own;
        and a metrics port of its own (one operator per port on this machine, as above)."""
        return {
            **self.env,
            "POD_ID": f"embedding-proxy-{uuid.uuid4().hex[:9]}-x2kq7",
            "POD_NAMESPACE": self.namespace,
            "EMBEDDING_PROXY_OPERATOR_METRICS_PORT": str(free_port()),
            # The API server reaches this operator's webhook on loopback (no Service here);
            # cluster mode only: the chart gives a namespaced operator no webhook.
            **(webhook_env(free_port()) if WEBHOOK_PORT in self.env else {}),
        }


WEBHOOK_PORT = "EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT"


def webhook_env(port: int) -> dict[str, str]:
    return {
        WEBHOOK_PORT: str(port),
        "EMBEDDING_PROXY_OPERATOR_WEBHOOK_URL": f"https://127.0.0.1:{port}",
    }


def install_account(
    plane: ControlPlane, directory: Path, release: str, namespace: str, *flags: str
) -> Account:
    objects = render(release, namespace, *flags)
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    plane.apply([o for o in objects if o["kind"] in ACCOUNT_KINDS])
    return account_of(plane, directory, release, namespace, objects)


def account_of(
    plane: ControlPlane, directory: Path, release: str, namespace: str, objects: list[Obj]
) -> Account:
    """The Account of a release whose objects are on the server already (`helm install`)."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["embedding-proxy-operator"]
    name = pod["serviceAccountName"]
    kubeconfig = plane.token_kubeconfig(namespace, name, directory / f"{release}.kubeconfig")
    return Account(
        namespace=namespace,
        name=name,
        kubeconfig=kubeconfig,
        args=list(container["args"]),
        # Only literal values; the downward API's are the test's to fill in, as the kubelet does.
        env={e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
        grants=grants_of(objects),
        probe_path=container["livenessProbe"]["httpGet"]["path"],
    )


def check_never_forbidden(plane: ControlPlane, account: Account) -> None:
    """Not one request of the operator's ServiceAccount was refused for want of a grant. (What
    it used is printed: `pytest -s` shows it.)"""
    events = plane.audit_events(account.username)
    used = ", ".join(f"{g or 'core'} {r} {v}" for g, r, v in sorted(grants_used(events)))
    print(f"{account.username} used: {used}")
    refused = forbidden(events)
    assert not refused, f"{account.username} was refused {len(refused)} requests: {refused[:10]}"


def grant_of(event: Obj) -> Grant | None:
    """The RBAC grant an audited request needed; None for a path that is not a resource
    (discovery, /version: every authenticated client may read those)."""
    ref = event.get("objectRef")
    if not ref or not ref.get("resource"):
        return None
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (ref.get("apiGroup") or "", resource, event["verb"])


def grants_used(events: Iterable[Obj]) -> dict[Grant, str]:
    """Each grant the requests needed, with one request that needed it (for messages)."""
    used: dict[Grant, str] = {}
    for e in events:
        grant = grant_of(e)
        if grant is not None:
            used.setdefault(grant, f"{e['verb']} {e['requestURI']}")
    return used
