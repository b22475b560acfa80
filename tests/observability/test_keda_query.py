"""The KEDA trigger's query, as the operator writes it into the ScaledObject, against a real
Prometheus (Debian's `prometheus`, on loopback) scraping the proxy's own exporter for three pods of
the target and one of another Deployment: the pod whose TEI is down is left out of the sum, as
the built-in autoscaler leaves it out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import start_http_server
from tests.helpers.processes import free_port
from tests.helpers.prometheus import Prometheus, wait_until

from embedding_proxy.telemetry.metrics import Metrics
from embedding_proxy_operator.logic import keda

NS = "gpu"


def proxy(depth: float, up: int) -> Metrics:
    m = Metrics()
    m.queue_depth_avg.set(depth)
    m.upstream_up.set(up)
    return m


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    pods = {
        "tei-5d8f7c9b4-aaaaa": proxy(100, 1),
        "tei-5d8f7c9b4-bbbbb": proxy(4096, 0),  # its TEI hangs: its queue only grows
        "tei-5d8f7c9b4-ccccc": proxy(20, 1),
        "tei-canary-5d8f7c9b4-ddddd": proxy(7, 1),  # another Deployment's
    }
    servers = []
    jobs = []
    for pod, metrics in pods.items():
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=metrics.registry))
        # As a PodMonitor labels the series: the pod's namespace and name.
        labels = {"namespace": NS, "pod": pod}
        jobs.append(
            {
                "job_name": pod,
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}],
            }
        )
    server = Prometheus(tmp_path)
    server.write(jobs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for http, thread in servers:
            http.shutdown()
            thread.join()


def test_the_keda_query_leaves_out_pods_whose_tei_is_down(prometheus: Prometheus) -> None:
    def scraped() -> bool:
        return len(prometheus.query("embedding_proxy_queue_depth_avg")) == 4

    wait_until(scraped, "every pod scraped", timeout=30)
    (result,) = prometheus.query(keda.query(NS, "tei"))
    assert float(result["value"][1]) == 100 + 20
