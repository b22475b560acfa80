"""`embedding-proxy-operator`: kopf's `run` with this operator's handlers loaded.

Every option of `kopf run` passes through, e.g.
    embedding-proxy-operator --all-namespaces --peering=embedding-proxy --liveness=http://0.0.0.0:8080/healthz
    embedding-proxy-operator --namespace=gpu --standalone --verbose
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf.cli

HANDLERS = "embedding_proxy_operator.handlers"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    kopf.cli.main.main(
        args=["run", "--module", HANDLERS, *args], prog_name="embedding-proxy-operator"
    )
