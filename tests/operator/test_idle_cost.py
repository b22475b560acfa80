"""An idle operator costs the API server next to nothing: EmbeddingProxies with their Deployments
(pods Pending; half of them with the built-in autoscaler on), all injected, then a quiet window of
the real API server's audit log: at most 1 request/s per 100 EmbeddingProxies (the Lease's
renewals apart: a fixed 1/s), and not one status patch. `scripts/operator-idle-bench` measures
the same at any count."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.helpers.control_plane import ControlPlane
from tests.helpers.idle_bench import run

COUNT = 20


def test_an_idle_operator_sends_almost_nothing_and_patches_no_status(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    figures = run(
        cluster,
        count=COUNT,
        namespaces=2,
        window=20.0,  # more than the status interval (15 s): every EmbeddingProxy polled
        settle=8.0,
        log=tmp_path / "operator.log",
        prefix=f"idle-{uuid.uuid4().hex[:6]}",
        autoscaled=2,  # half of them with the built-in autoscaler on (it polls every 5 s)
    )
    print(figures.report())
    assert figures.status_patches == 0, figures.by_kind
    assert figures.per_second_per_100 <= 1.0, figures.by_kind
    # Leading costs a read and a renewal every retry period (2 s), whatever the count.
    assert figures.lease_requests <= 2 * (figures.window_seconds / 2 + 1)
