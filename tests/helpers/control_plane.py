"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager
on loopback, started by `../shared/k8s/control-plane` (or `$K8S_CONTROL_PLANE`), one a session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def find_script() -> Path | None:
    configured = os.environ.get("K8S_CONTROL_PLANE")
    candidates = [Path(configured)] if configured else []
    candidates.append(ROOT.parent / "shared" / "k8s" / "control-plane")
    return next((c for c in candidates if c.is_file()), None)


def find_kubectl() -> str:
    local = ROOT / ".tools" / "bin" / "kubectl"
    found = shutil.which("kubectl") or (str(local) if local.is_file() else None)
    if not found:
        fail_or_skip("kubectl not found on PATH or in .tools/bin: run scripts/fetch-k8s-tools")
    return str(found)


def fail_or_skip(message: str) -> None:
    """In CI every tool must be there, so a missing one fails; elsewhere the test skips."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class ControlPlane:
    directory: Path
    script: Path

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.directory / "logs" / "audit.log"

    @property
    def server(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        return config["clusters"][0]["cluster"]["server"]

    def start(self) -> None:
        done = subprocess.run(
            [str(self.script), "start", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"control plane did not start: {done.stderr.strip()}")

    def stop(self) -> None:
        subprocess.run(
            [str(self.script), "stop", str(self.directory)], capture_output=True, timeout=60
        )

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [find_kubectl(), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def apply(self, objects: list[dict[str, Any]] | dict[str, Any], *flags: str) -> str:
        docs = objects if isinstance(objects, list) else [objects]
        text = "\n---\n".join(json.dumps(d) for d in docs)
        return self.kubectl("apply", *flags, "-f", "-", stdin=text).stdout

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig at `path` that acts as the ServiceAccount, with a token from the API
        server (what a pod of that ServiceAccount gets)."""
        token = self.kubectl("create", "token", service_account, "-n", namespace).stdout.strip()
        cluster = yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "plane", "cluster": cluster}],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "plane", "user": service_account}}],
            "current-context": "sa",
        }
        path.write_text(json.dumps(config))
        return path

    def audit_events(self, user: str | None = None) -> list[dict[str, Any]]:
        """The audit log's events (every request, metadata level), oldest first, rotated files
        included; with `user`, only the requests made as (or impersonating) that user."""
        logs = self.audit_log.parent
        files = sorted(p for p in logs.glob("audit-*.log") if p.is_file())
        if self.audit_log.is_file():
            files.append(self.audit_log)
        events = []
        for path in files:
            for line in path.read_text().splitlines():
                if not line or (user is not None and user not in line):
                    continue
                event = json.loads(line)
                if user is None or user in (
                    event.get("user", {}).get("username"),
                    (event.get("impersonatedUser") or {}).get("username"),
                ):
                    events.append(event)
        return events


def forbidden(events: list[dict[str, Any]]) -> list[str]:
    """The requests refused with 403 (Forbidden), one line each."""
    out: dict[str, str] = {}
    for e in events:
        status = e.get("responseStatus") or {}
        if status.get("code") == 403:
            line = f"{e.get('verb')} {e.get('requestURI')}: {status.get('message', '')}"
            out.setdefault(e.get("auditID", line), line)
    return list(out.values())


def start_control_plane(directory: Path) -> ControlPlane:
    script = find_script()
    if script is None:
        fail_or_skip(
            "no control plane: set K8S_CONTROL_PLANE or keep ../shared/k8s beside the checkout"
        )
    plane = ControlPlane(directory=directory, script=script)  # type: ignore[arg-type]
    plane.start()
    return plane


def one_ready_pod(plane: ControlPlane, ns: str, app: str, pod: str, sidecar: str) -> None:
    """A Deployment `app` and the one pod of it the test plays kubelet for: ready, at
    127.0.0.1, running the sidecar (a native sidecar named `sidecar`) beside TEI."""
    labels = {"app": app}
    plane.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": app, "namespace": ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "tei", "image": "tei:test"}]},
                },
            },
        }
    )
    plane.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": labels},
            "spec": {
                "initContainers": [
                    {"name": sidecar, "image": "proxy:test", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "tei", "image": "tei:test"}],
            },
        }
    )
    ready = {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
             "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    plane.kubectl(
        "patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": ready}),
    )  # fmt: skip
