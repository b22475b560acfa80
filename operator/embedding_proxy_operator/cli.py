"""`embedding-proxy-operator`: kopf's `run` with this operator's handlers loaded.

Every option of `kopf run` passes through but `--peering`, e.g.
    embedding-proxy-operator --all-namespaces --liveness=http://0.0.0.0:8080/healthz
    embedding-proxy-operator --namespace=gpu --verbose

Several replicas share one Lease (`handlers.leading`), and only its holder runs kopf's watches
and handlers: kopf's own peering is off (`--standalone`), so that a replica taking over never
waits for a former peer's record to age out.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import click
import kopf.cli

from .model import settings

HANDLERS = "embedding_proxy_operator.handlers"


def run_args(args: Sequence[str]) -> list[str]:
    """The arguments of `kopf run` for the operator's own: the handlers module, and no kopf
    peering (the Lease decides who acts)."""
    args = list(args)
    if args[:1] == ["run"]:
        # `embedding-proxy-operator run ...`, as kopf's usage line suggests, means the same.
        args = args[1:]
    standalone = [] if "--standalone" in args else ["--standalone"]
    return ["run", "--module", HANDLERS, *standalone, *args]


def peering_problem(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Why kopf's peering must not be asked for, in one line: the Lease does its work, and a
    replica taking over would wait up to a minute for its former peer's record to age out."""
    args = list(args)[1:] if list(args[:1]) == ["run"] else list(args)
    try:
        context = kopf.cli.run.make_context(
            "run", args, resilient_parsing=True, auto_envvar_prefix="KOPF_RUN"
        )
    except click.ClickException:
        return None  # kopf says what is wrong with them
    if context.params.get("peering_name") or environ.get("KOPF_RUN_PEERING"):
        return (
            "--peering: kopf's peering is not used; the replicas elect their leader with a "
            f"Lease ({settings.PREFIX}LEASE_NAME); leave --peering out"
        )
    return None


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def missing_cluster(environ: Mapping[str, str], token: Path = SERVICE_ACCOUNT_TOKEN) -> str | None:
    """Why there are no credentials to reach a cluster with, in one line; None when there are
    some (whether they work, kopf finds out, and retries)."""
    if environ.get("KUBERNETES_SERVICE_HOST") and token.exists():
        return None
    if environ.get("KUBECONFIG"):
        paths = [p for p in environ["KUBECONFIG"].split(os.pathsep) if p]
        if any(Path(p).expanduser().is_file() for p in paths):
            return None
        return (
            f"no Kubernetes cluster to talk to: KUBECONFIG names no file that exists "
            f"({environ['KUBECONFIG']}); point it at a kubeconfig, e.g. from `kind get kubeconfig`"
        )
    if (Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config").is_file():
        return None
    return (
        "no Kubernetes cluster to talk to: not in a pod, and no kubeconfig (KUBECONFIG or "
        "~/.kube/config); run it in the cluster (the Helm chart), or point KUBECONFIG at one"
    )


def liveness_url(args: Sequence[str]) -> str | None:
    """The URL of `--liveness` among kopf's arguments; None when there is none."""
    url = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith("--liveness="):
            url = arg.split("=", 1)[1]
        elif arg == "--liveness" and i + 1 < len(args):
            url = args[i + 1]
    return url


def liveness_problem(args: Sequence[str]) -> str | None:
    """Why kopf's liveness endpoint (`--liveness=URL`) cannot listen, in one line; None when it
    can, or none is asked for. Checked before kopf starts, which would otherwise fail with a
    traceback of some 70 lines."""
    url = liveness_url(args)
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "0.0.0.0", parts.port or 80
    except ValueError as e:
        return f"--liveness={url}: {e}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As the server will: a port left in TIME_WAIT is free, one listened on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        return f"the liveness endpoint cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def settings_problem(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """What is wrong with the operator's own settings (lease timings, images, the webhook), in
    one line; None when nothing is. Checked before kopf starts, whose start-up would otherwise
    retry them every minute and never answer its liveness probe."""
    try:
        options = settings.Options.from_env(environ)
    except ValueError as e:
        return str(e)
    url = liveness_url(args)
    try:
        health = (urlsplit(url).port or 80) if url else None
    except ValueError:
        return None  # liveness_problem says what is wrong with it
    if options.webhook_port and options.webhook_port == health:
        return (
            f"{settings.PREFIX}WEBHOOK_PORT ({options.webhook_port}) is the liveness endpoint's "
            "port (--liveness): give the webhook a port of its own"
        )
    return None


def namespaced(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether kopf would run namespaced: `--namespace`/`-n` given (or kopf's environment
    variables for it) and not `--all-namespaces`. Parsed as kopf's own `run` parses them."""
    args = list(args)[1:] if list(args[:1]) == ["run"] else list(args)
    try:
        context = kopf.cli.run.make_context(
            "run", args, resilient_parsing=True, auto_envvar_prefix="KOPF_RUN"
        )
    except click.ClickException:
        return False  # kopf says what is wrong with them
    params = context.params
    return bool(params.get("namespaces") or environ.get("KOPF_RUN_NAMESPACE")) and not params.get(
        "clusterwide"
    )


def webhook_problem(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Why a namespaced operator must not start with these settings, in one line: the admission
    webhook is a cluster-wide object (its MutatingWebhookConfiguration sees pods of every
    namespace), which a namespaced install is not given (docs/security.md); the chart refuses
    the same. None when the combination is fine."""
    if not namespaced(args, environ):
        return None
    port = environ.get(f"{settings.PREFIX}WEBHOOK_PORT") or "0"
    if port.strip("0"):
        return (
            f"{settings.PREFIX}WEBHOOK_PORT is set ({port}), but the operator runs namespaced "
            "(--namespace): its admission webhook would be a cluster-wide object that sees pods "
            "of every namespace, which a namespaced operator is not given (docs/security.md); "
            "unset it, or run cluster-wide (--all-namespaces)"
        )
    if environ.get(f"{settings.PREFIX}INJECTION") == "Webhook":
        return (
            f"{settings.PREFIX}INJECTION is Webhook, but the operator runs namespaced "
            "(--namespace) and so has no admission webhook: set it to Deployment, or run with "
            "--all-namespaces and a webhook port"
        )
    return None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        own = installed("embedding-proxy")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
        own = "0+unknown"
    return f"embedding-proxy-operator {own} (kopf {installed('kopf')})"


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if list(args[:1]) == ["--version"]:
        print(version())
        return
    if any(a in ("--help", "-h") for a in args):
        # `kopf run`'s options, under this command's own name (through kopf's group, the usage
        # line would read `embedding-proxy-operator run [OPTIONS]`).
        kopf.cli.run.main(
            args=["--help"], prog_name="embedding-proxy-operator", auto_envvar_prefix="KOPF_RUN"
        )
    problem = (
        webhook_problem(args, os.environ)
        or peering_problem(args, os.environ)
        or settings_problem(args, os.environ)
        or missing_cluster(os.environ)
        or liveness_problem(args)
    )
    if problem is not None:
        print(f"embedding-proxy-operator: {problem}", file=sys.stderr)
        raise SystemExit(1)
    kopf.cli.main.main(args=run_args(args), prog_name="embedding-proxy-operator")
