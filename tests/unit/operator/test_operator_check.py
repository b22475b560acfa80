"""`python -m embedding_proxy_operator.check` (what `helm test` runs) when it cannot ask the API
server at all: one line each, exit 1, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checked(kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    return subprocess.run(
        [sys.executable, "-m", "embedding_proxy_operator.check", "--namespace=ep",
         "--deployment=ep-embedding-proxy"],
        capture_output=True, text=True, timeout=60, env={**env, "KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip


@pytest.mark.parametrize("server", ["nothing listens", "no kubeconfig"])
def test_an_api_server_out_of_reach_is_one_line_and_exit_1(tmp_path: Path, server: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    if server == "nothing listens":
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{closed_port()}'}}}}]\n"
            "users: [{name: u, user: {token: x}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        )
    done = checked(kubeconfig)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("FAILED "), line
    assert "cannot reach the API server" in line or "no credentials" in line, line
    assert done.stderr.count("\n") <= 1, done.stderr
