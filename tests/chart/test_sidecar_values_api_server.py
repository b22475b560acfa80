"""Sidecar values pod validation would refuse are refused by the CRD on a real API server, each
with its message; the values it takes are accepted, at the bounds the CEL rules' cost is
estimated for too (the operator's unit tests run the same table)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.helpers.control_plane import ControlPlane
from tests.helpers.sidecar_values import ACCEPTED, REFUSED


def proxies(sidecars: list[dict[str, Any]]) -> str:
    """One EmbeddingProxy per sidecar, named by its place in the list, as one kubectl input."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "embeddingproxy.io/v1alpha1",
                    "kind": "EmbeddingProxy",
                    "metadata": {"name": f"sidecar-{i}", "namespace": "default"},
                    "spec": {"targetRef": {"name": "tei"}, "sidecar": sidecar},
                }
                for i, sidecar in enumerate(sidecars)
            ],
        }
    )


def test_each_refused_value_is_refused_with_its_message(api_server: ControlPlane) -> None:
    # One kubectl for the whole table: it sends each object and reports each refusal.
    out = api_server.kubectl(
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin=proxies([s for s, _ in REFUSED]),
        check=False,
    )
    assert out.returncode != 0
    refusals = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r'"sidecar-(\d+)" is invalid: .*', out.stderr)
    }
    for i, (sidecar, message) in enumerate(REFUSED):
        assert i in refusals, f"{sidecar} was accepted"
        assert message in refusals[i], (sidecar, refusals[i])
        assert "spec.sidecar." in refusals[i]
    assert "created (server dry run)" not in out.stdout, out.stdout


def test_the_values_it_takes_are_accepted(api_server: ControlPlane) -> None:
    out = api_server.kubectl(
        "apply", "--dry-run=server", "-f", "-", stdin=proxies(ACCEPTED), check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("created (server dry run)") == len(ACCEPTED), out.stdout
