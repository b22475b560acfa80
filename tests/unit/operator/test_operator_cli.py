"""The operator's command line: kopf's `run` with the handlers, without kopf's peering."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import kopf.cli
import pytest

from embedding_proxy_operator.cli import HANDLERS, peering_problem, run_args


def parsed(args: list[str]) -> dict[str, Any]:
    """What `kopf run` makes of the arguments (parsed only, not run)."""
    assert args[0] == "run"
    return dict(kopf.cli.run.make_context("run", args[1:]).params)


def refused_at_start(args: list[str], env: dict[str, str]) -> str:
    """Run the operator; it must stop at once with exit 1 and one line (no traceback) on stderr,
    which is returned."""
    done = subprocess.run(
        [sys.executable, "-m", "embedding_proxy_operator", "--standalone", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_kopf_runs_the_handlers_without_its_peering() -> None:
    params = parsed(run_args(["--all-namespaces", "--verbose"]))
    assert params["modules"] == (HANDLERS,)
    assert params["clusterwide"] is True
    assert params["standalone"] is True and params["peering_name"] is None
    assert run_args(["--standalone"]).count("--standalone") == 1


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--peering=embedding-proxy"], {}), (["-P", "epp"], {}), ([], {"KOPF_RUN_PEERING": "epp"})],
)
def test_kopf_peering_is_refused_at_start(args: list[str], env: dict[str, str]) -> None:
    assert "--peering" in (peering_problem(args, env) or "")
    assert peering_problem(["--all-namespaces"], {}) is None


def test_a_leading_run_is_kopfs_own_and_dropped() -> None:
    assert run_args(["run", "-A"]) == run_args(["-A"])


def test_a_busy_liveness_port_is_one_line_and_exit_1(tmp_path: Any) -> None:
    import socket

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        liveness = f"--liveness=http://127.0.0.1:{port}/healthz"
        line = refused_at_start([liveness], {"KUBECONFIG": str(kubeconfig)})
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_a_free_liveness_port_passes_the_check() -> None:
    from embedding_proxy_operator.cli import liveness_problem

    assert liveness_problem(["--standalone"]) is None
    assert liveness_problem(["--liveness", "http://127.0.0.1:0/healthz"]) is None
    assert "cannot listen" in (liveness_problem(["--liveness=http://192.0.2.1:8080/h"]) or "")


WEBHOOK_PORT = {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "8443"}
WEBHOOK_DEFAULT = {"EMBEDDING_PROXY_OPERATOR_INJECTION": "Webhook"}


@pytest.mark.parametrize(
    ("args", "env", "refused"),
    [
        (["--namespace=gpu"], WEBHOOK_PORT, "WEBHOOK_PORT is set (8443)"),
        (["-n", "gpu", "-n", "cpu"], WEBHOOK_PORT, "WEBHOOK_PORT is set (8443)"),
        (["-vn", "gpu"], WEBHOOK_PORT, "WEBHOOK_PORT is set (8443)"),
        ([], {**WEBHOOK_PORT, "KOPF_RUN_NAMESPACE": "gpu"}, "WEBHOOK_PORT is set"),
        (["--namespace=gpu"], WEBHOOK_DEFAULT, "INJECTION is Webhook"),
        # Cluster-wide (or kopf's implicit default), or no webhook: nothing to refuse.
        (["--all-namespaces"], {**WEBHOOK_PORT, **WEBHOOK_DEFAULT}, None),
        (["-A"], WEBHOOK_PORT, None),
        ([], WEBHOOK_PORT, None),
        (["--namespace=gpu"], {}, None),
        (["--namespace=gpu"], {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "0"}, None),
        (["--namespace=gpu"], {"EMBEDDING_PROXY_OPERATOR_INJECTION": "Deployment"}, None),
    ],
)
def test_a_namespaced_operator_refuses_a_webhook(
    args: list[str], env: dict[str, str], refused: str | None
) -> None:
    from embedding_proxy_operator.cli import webhook_problem

    problem = webhook_problem(args, env)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem
        assert "namespaced" in problem and "--all-namespaces" in problem


def test_kopfs_own_environment_variable_for_namespaces_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from embedding_proxy_operator.cli import webhook_problem

    monkeypatch.setenv("KOPF_RUN_NAMESPACES", "gpu")
    assert webhook_problem([], WEBHOOK_PORT) is not None


def test_the_refusal_is_one_line_and_exit_1(tmp_path: Any) -> None:

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    line = refused_at_start(["--namespace=gpu"], {"KUBECONFIG": str(kubeconfig), **WEBHOOK_PORT})
    assert line.startswith("embedding-proxy-operator: EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT")
    assert "docs/security.md" in line


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_names_the_command_as_it_is_run(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from embedding_proxy_operator.cli import main

    with pytest.raises(SystemExit) as done:
        main([flag])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Usage: embedding-proxy-operator [OPTIONS] [PATHS]...", out
    # kopf run's own options, which every argument passes through to.
    assert "--all-namespaces" in out and "--liveness" in out


@pytest.mark.parametrize(
    ("args", "env", "refused"),
    [
        # A lease shorter than its renew deadline: before, kopf's start-up retried it every
        # minute and never answered the liveness probe.
        ([], {"EMBEDDING_PROXY_OPERATOR_LEASE_SECONDS": "5"}, "LEASE_SECONDS (5) must be longer"),
        ([], {"EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE": "Bad Image"}, "SIDECAR_IMAGE"),
        # The webhook on the liveness endpoint's port: before, start-up hung.
        (
            ["--liveness=http://0.0.0.0:8080/healthz"],
            {**WEBHOOK_PORT, "EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "8080",
             "EMBEDDING_PROXY_OPERATOR_WEBHOOK_SERVICE": "ep-webhook.system"},
            "is the liveness endpoint's port",
        ),
        (
            ["--liveness=http://0.0.0.0:8080/healthz"],
            {**WEBHOOK_PORT, "EMBEDDING_PROXY_OPERATOR_WEBHOOK_SERVICE": "ep-webhook.system"},
            None,
        ),
        ([], {}, None),
    ],
)  # fmt: skip
def test_the_operators_own_settings_are_checked_before_kopf_starts(
    args: list[str], env: dict[str, str], refused: str | None
) -> None:
    from embedding_proxy_operator.cli import settings_problem

    problem = settings_problem(args, env)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem, problem
        assert "\n" not in problem
