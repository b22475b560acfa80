"""`python -m embedding_proxy_operator.check`: what the chart's `helm test` runs in the cluster.

It asks the API server, as the test pod's ServiceAccount, whether the release works: the
EmbeddingProxy CRD is established, and the operator's Deployment has every replica available.
One line a check; exit code 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

from kubernetes import client, config

from .model import names

CRD_NAME = f"{names.PLURAL}.{names.GROUP}"


def _load_credentials() -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:  # outside a pod: the kubeconfig (as `helm test`'s stand-in in the tests runs it)
        config.load_kube_config()


def crd_established() -> tuple[bool, str]:
    crd = client.ApiextensionsV1Api().read_custom_resource_definition(CRD_NAME)
    conditions = {c.type: c.status for c in (crd.status.conditions or [])}
    ok = conditions.get("Established") == "True"
    return ok, f"CRD {CRD_NAME}: {'established' if ok else 'not established'}"


def operator_available(namespace: str, deployment: str) -> tuple[bool, str]:
    dep = client.AppsV1Api().read_namespaced_deployment(deployment, namespace)
    want, have = dep.spec.replicas or 0, dep.status.available_replicas or 0
    ok = want > 0 and have >= want
    return ok, f"operator deployment {namespace}/{deployment}: {have} of {want} replicas available"


def one_line(error: BaseException) -> str:
    """The error's type and its message's last line (urllib3's hold the whole retry story)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m embedding_proxy_operator.check")
    p.add_argument("--namespace", required=True, help="the release's namespace")
    p.add_argument("--deployment", required=True, help="the operator's Deployment")
    args = p.parse_args(argv)
    try:
        _load_credentials()
    except config.ConfigException as e:
        print(f"FAILED no credentials for the API server: {one_line(e)}")
        return 1
    results = []
    for check in (crd_established, lambda: operator_available(args.namespace, args.deployment)):
        try:
            results.append(check())
        except client.ApiException as e:
            results.append((False, f"cannot ask the API server: {e.status} {e.reason}"))
        except Exception as e:  # unreachable, refused, TLS: one line, not urllib3's traceback
            results.append((False, f"cannot reach the API server: {one_line(e)}"))
            break  # the next check would wait for the same retries
    for ok, line in results:
        print(("ok    " if ok else "FAILED ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
