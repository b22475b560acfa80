"""A pod's shutdown under load, as the kubelet runs it for the pod spec the operator renders: no
request lost, none answered 502 (docs/operator.md, "How a pod shuts down"). And readiness that
follows the upstream."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from tests.helpers.calls import embed
from tests.helpers.kubelet import BIN, pod_processes, scale_down_under_load
from tests.helpers.processes import Process, Starter

from embedding_proxy_operator.model import names

# Short enough for a lean test; the callers stop well inside drainSeconds.
SIDECAR = {"drainSeconds": 3, "graceSeconds": 2}
PROXY, TEI = names.SIDECAR_NAME, "tei"


@pytest.mark.parametrize("mode", ["Native", "Container"])
async def test_a_scale_down_under_load_loses_no_request(mode: str, tmp_path: Path) -> None:
    with pod_processes(mode, SIDECAR, tmp_path) as (pod, processes):
        outcome = await scale_down_under_load(pod, processes)
    timeline = outcome.timeline
    report = f"{timeline}\n{outcome.proxy_log[-3000:]}"
    assert outcome.failures == [], report
    assert len(outcome.statuses) == outcome.sent, report  # every request sent got its answer
    assert set(outcome.statuses) == {200}, report
    assert timeline.killed == [], report  # everything fitted the grace period
    assert outcome.proxy_exit == 0, report
    assert "drained: all work answered" in outcome.proxy_log
    # The proxy drained while TEI still served: unready before TEI was told to stop.
    assert timeline.at("proxy /ready: 503") < timeline.at(f"{TEI}: SIGTERM"), report
    if mode == "Native":
        # Its preStop hook, not SIGTERM, started the drain: SIGTERM came after TEI had exited.
        assert timeline.at(f"{TEI}: exited (0)") <= timeline.at(f"{PROXY}: SIGTERM"), report
    else:
        assert timeline.at(f"{PROXY}: SIGTERM") < timeline.at(f"{TEI}: SIGTERM"), report


async def test_ready_follows_the_upstream_at_once(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    simulator = start_simulator()
    proxy: Process = start_proxy(simulator.url, ready_path="/ready")
    simulator.proc.kill()
    simulator.proc.wait()
    # The first call that finds TEI gone turns the proxy unready, before any health probe.
    status, _ = await embed(http, proxy.url, {"inputs": "into the void"})
    assert status == 502
    async with http.get(proxy.url + "/ready") as resp:
        assert resp.status == 503
        assert "not answering" in (await resp.json())["reason"]
    start_simulator(port=simulator.port)
    # Ready again once TEI answers (probed often while it does not); polled, not timed.
    for _ in range(400):
        async with http.get(proxy.url + "/ready") as resp:
            if resp.status == 200:
                break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the proxy did not turn ready again")
    assert (await embed(http, proxy.url, {"inputs": "back"}))[0] == 200


async def test_sigusr1_drains_and_the_proxy_stays_up_until_sigterm(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    proxy = start_proxy(simulator.url, "--drain-seconds", "0.2", ready_path="/ready")
    proxy.signal(signal.SIGUSR1)
    for _ in range(400):
        if "drained: all work answered" in proxy.output():
            break
        await asyncio.sleep(0.05)
    async with http.get(proxy.url + "/ready") as resp:
        assert resp.status == 503
    async with http.get(proxy.url + "/health") as resp:
        assert resp.status == 200  # alive: the liveness probe must not restart it
    status, body = await embed(http, proxy.url, {"inputs": "too late"})
    assert status == 503 and body["error_type"] == "Unhealthy"
    assert proxy.proc.poll() is None
    proxy.signal(signal.SIGTERM)
    assert proxy.proc.wait(15) == 0


def test_drain_names_a_process_it_cannot_signal() -> None:
    done = subprocess.run(
        [str(BIN / "embedding-proxy"), "drain", "--pid", "999999999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot signal process 999999999" in done.stderr
