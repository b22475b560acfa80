"""One real proxy (behind the TEI simulator) and one real operator (against the real API
server), scraped once a session: the metric names that dashboards and alert rules may use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers.control_plane import ControlPlane
from tests.helpers.exported import post_json, scrape, series_names
from tests.helpers.processes import PYTHON, free_port, proxy_args, running

OPERATOR = str(Path(PYTHON).parent / "embedding-proxy-operator")


@pytest.fixture(scope="session")
def exported(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Series name -> type, for everything the proxy and the operator export."""
    logs = tmp_path_factory.mktemp("exported")
    sim_port, proxy_port, metrics_port, operator_port = (free_port() for _ in range(4))
    simulator = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1"]
    proxy = proxy_args(f"http://127.0.0.1:{sim_port}", proxy_port, "--metrics-port")
    operator_env = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "EMBEDDING_PROXY_OPERATOR_METRICS_PORT": str(operator_port),
    }
    with (
        running([*simulator, "--port", str(sim_port)], sim_port, logs / "sim.log"),
        running([*proxy, str(metrics_port)], proxy_port, logs / "proxy.log", ready_path="/ready"),
        running(
            [OPERATOR, "--namespace=metric-names", "--standalone"],
            operator_port,
            logs / "operator.log",
            env=operator_env,
            ready_path="/metrics",
        ),
    ):
        # Some traffic, so that labelled series exist as well as their declarations.
        assert post_json(f"http://127.0.0.1:{proxy_port}/embed", {"inputs": ["a", "b"]}) == 200
        proxy_page = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        operator_page = scrape(f"http://127.0.0.1:{operator_port}/metrics")
    names = series_names(proxy_page)
    operator_names = series_names(operator_page)
    assert any(n.startswith("embedding_proxy_operator_") for n in operator_names), operator_page
    names.update(operator_names)
    yield names
