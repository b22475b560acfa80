"""`server.workers`: several proxy processes on one port under a supervisor, seen from outside as
one proxy: every caller its own answer, the pod's totals on /metrics, one readiness, signals that
reach every worker, and a worker that dies restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import psutil
import pytest
import yaml
from tests.helpers.calls import close, embed, metrics
from tests.helpers.processes import PYTHON, Process, Starter, proxy_args

from embedding_proxy.simulator.vectors import embedding

WORKERS = 2


def workers_of(proxy: Process) -> list[psutil.Process]:
    return psutil.Process(proxy.proc.pid).children()


async def until(condition, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` (no fixed sleeps on a busy machine)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"not within {seconds} s: {what}")


async def answer_from_a_running_worker(url: str) -> tuple[str, tuple[int, str]]:
    """/metrics and /ready on a new connection each try, until one lands on a worker that runs
    (the kernel spreads connections by their addresses; a stopped worker answers none)."""
    for _ in range(30):
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=4)) as http:
                async with http.get(url + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                async with http.get(url + "/ready") as resp:
                    return text, (resp.status, (await resp.json())["reason"])
        except TimeoutError:
            continue
    pytest.fail("no running worker answered")


def holds_a_client(worker: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        for c in worker.net_connections(kind="tcp")
    )


async def test_workers_answer_every_caller_and_metrics_are_the_pods(
    start_proxy: Starter, simulator: Process
) -> None:
    proxy = start_proxy(simulator.url, "--workers", str(WORKERS), ready_path="/ready")
    assert len(workers_of(proxy)) == WORKERS
    # A second proxy on the same port is refused in one line, as one process would be, not let
    # in to share it (its workers could: SO_REUSEPORT).
    second = subprocess.run(
        proxy_args(simulator.url, proxy.port, "--workers", str(WORKERS)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"embedding-proxy serve: cannot listen on 127.0.0.1:{proxy.port}: address already in "
        "use; another program is using it: stop that, or choose another port with --port"
    ]
    # Many connections, so that the kernel hands some to each worker; kept open to check that.
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        requests = [[f"caller {r} input {i}" for i in range(r % 4 + 1)] for r in range(240)]
        answers = await asyncio.gather(*(embed(http, proxy.url, {"inputs": r}) for r in requests))
        for texts, (status, body) in zip(requests, answers, strict=True):
            assert status == 200, body
            assert isinstance(body, list) and len(body) == len(texts)
            assert all(close(v, embedding(t)) for v, t in zip(body, texts, strict=True))
        workers = workers_of(proxy)
        assert all(holds_a_client(w, proxy.port) for w in workers), "a worker got no connection"

        inputs = sum(len(r) for r in requests)
        m = await metrics(http, proxy.url)
        # The pod's totals, whichever worker answered the scrape.
        assert m["embedding_proxy_requests_total{route=/embed,status=200}"] == len(requests)
        assert m["embedding_proxy_inputs_total{route=/embed,status=200}"] == inputs
        assert m["embedding_proxy_batch_size_sum"] == inputs
        assert m["embedding_proxy_request_duration_seconds_count{route=/embed}"] == len(requests)
        assert m["embedding_proxy_workers"] == WORKERS
        assert m["embedding_proxy_upstream_up"] == 1
        assert m["embedding_proxy_config_info{version=}"] == 1

        # A stuck worker holds up no scrape: the other answers, within about a second, with the
        # stuck one's last figures; the pod is not ready meanwhile.
        stuck = workers[1]
        stuck.suspend()
        try:
            text, ready = await answer_from_a_running_worker(proxy.url)
        finally:
            stuck.resume()
        assert (
            f'embedding_proxy_requests_total{{route="/embed",status="200"}} {len(requests)}.0'
            in text
        )
        assert ready[0] == 503 and ready[1].endswith("did not answer"), ready

        # A worker that dies is restarted, logged, and what it had counted is still counted.
        victim = workers[0]
        victim.kill()
        await until(
            lambda: "restarting it" in proxy.output() and len(workers_of(proxy)) == WORKERS,
            "the killed worker restarted",
        )
        assert victim.pid not in [w.pid for w in workers_of(proxy)]
        await until(lambda: "serving again" in proxy.output(), "the new worker serving")
        for _ in range(20):
            status, body = await embed(http, proxy.url, {"inputs": "after the restart"})
            assert status == 200 and close(body[0], embedding("after the restart"))
        m = await metrics(http, proxy.url)
        assert m["embedding_proxy_requests_total{route=/embed,status=200}"] == len(requests) + 20
        assert m["embedding_proxy_worker_restarts_total"] == 1
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 200, await resp.text()
    assert f"(pid {victim.pid}) exited with signal 9; restarting it" in proxy.output()


@pytest.mark.parametrize("how", ["SIGTERM", "drain, then SIGTERM"])
async def test_the_pod_drains_every_worker(
    how: str, start_proxy: Starter, start_simulator: Starter
) -> None:
    # Slow upstream calls, so that work is in flight in every worker when SIGTERM comes.
    simulator = start_simulator("--base-ms", "400")
    proxy = start_proxy(
        simulator.url, "--workers", str(WORKERS), "--drain-seconds", "0.5", ready_path="/ready"
    )
    workers = workers_of(proxy)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        calls = [
            asyncio.create_task(embed(http, proxy.url, {"inputs": f"in flight {i}"}))
            for i in range(64)
        ]
        await until(
            lambda: all(holds_a_client(w, proxy.port) for w in workers),
            "every worker holds a caller",
        )
        if how == "SIGTERM":
            proxy.signal(signal.SIGTERM)
        else:  # the preStop hook of a native sidecar: the supervisor is the container's process
            drain = [PYTHON, "-m", "embedding_proxy.cli", "drain", "--pid", str(proxy.proc.pid)]
            assert (await asyncio.to_thread(subprocess.run, drain)).returncode == 0
        # Unready at once, for the pod, whichever worker answers.
        await until(lambda: "every worker drains" in proxy.output(), "the drain")
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "draining"
        answers = await asyncio.gather(*calls)
        if how != "SIGTERM":
            await until(
                lambda: proxy.output().count("drained: all work answered") == WORKERS,
                "every worker drained",
            )
            assert proxy.proc.poll() is None  # up until SIGTERM
            assert all(w.is_running() for w in workers)
            proxy.signal(signal.SIGTERM)
    for i, (status, body) in enumerate(answers):
        assert status == 200, body
        assert close(body[0], embedding(f"in flight {i}"))
    assert await asyncio.to_thread(proxy.proc.wait, 60) == 0
    log = proxy.output()
    assert log.count("drained: all work answered") == WORKERS, log[-3000:]
    assert not any(w.is_running() for w in workers)


async def test_sighup_and_a_swapped_file_reload_every_worker(
    start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"version": "v1", "batching": {"max_wait_ms": 1}}))
    proxy = start_proxy(
        simulator.url, "--workers", str(WORKERS), "--config", str(config), ready_path="/ready"
    )
    async with aiohttp.ClientSession() as http:
        assert (await metrics(http, proxy.url))["embedding_proxy_config_info{version=v1}"] == 1

        # The file changed in place, its size and time kept: only SIGHUP makes a worker read it.
        stat = config.stat()
        config.write_text(yaml.safe_dump({"version": "v2", "batching": {"max_wait_ms": 1}}))
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert config.stat().st_size == stat.st_size
        proxy.signal(signal.SIGHUP)
        await until(lambda: proxy.output().count("config 'v2' applied") == WORKERS, "SIGHUP")
        m = await metrics(http, proxy.url)
        assert m.get("embedding_proxy_config_info{version=v2}") == 1
        assert "embedding_proxy_config_info{version=v1}" not in m  # no worker runs v1 any more

        # A ConfigMap's swap (a new file renamed over the old): every worker sees it.
        new = tmp_path / "config.yaml.new"
        new.write_text(yaml.safe_dump({"version": "v3", "batching": {"max_wait_ms": 2}}))
        new.rename(config)
        await until(lambda: proxy.output().count("config 'v3' applied") == WORKERS, "the swap")
        m = await metrics(http, proxy.url)
        assert "embedding_proxy_config_info{version=v2}" not in m
        assert m["embedding_proxy_config_reloads_total{result=ok}"] == 2 * WORKERS
        assert len(workers_of(proxy)) == WORKERS  # nobody died of SIGHUP
