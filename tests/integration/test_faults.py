"""The proxy under faults, with the faults made for real: processes killed and restarted, slow
and broken upstream answers, bad inputs, callers that leave, SIGTERM and config swaps under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from tests.helpers.calls import close, embed, metrics
from tests.helpers.processes import Process, Starter

from embedding_proxy.simulator.vectors import embedding


async def set_faults(http: aiohttp.ClientSession, simulator: Process, **faults: object) -> None:
    async with http.post(simulator.url + "/simulator/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()


async def sim_stats(http: aiohttp.ClientSession, simulator: Process) -> dict:
    async with http.get(simulator.url + "/simulator/stats") as resp:
        return await resp.json()


async def test_one_bad_input_among_32_fails_alone(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    # Hold inputs until 32 have gathered, so that the bad one shares a batch with 31 good ones.
    proxy = start_proxy(
        simulator.url,
        "--flush-mode",
        "deadline",
        "--max-wait-ms",
        "2000",
        "--max-batch-size",
        "32",
        ready_path="/ready",
    )
    texts = [f"good input {i}" for i in range(32)]
    texts[13] = "word " * 600  # over the simulator's max_input_length of 512 tokens
    # TEI 1.9 truncates what a request does not say to keep whole (its --auto-truncate is on).
    bodies = [{"inputs": t, "truncate": False} for t in texts]
    answers = await asyncio.gather(*(embed(http, proxy.url, body) for body in bodies))
    for i, (text, (status, body)) in enumerate(zip(texts, answers, strict=True)):
        if i == 13:
            assert status in (413, 422)
            assert body["error_type"] == "Validation" and body["error"]
        else:
            assert status == 200 and close(body[0], embedding(text))
    m = await metrics(http, proxy.url)
    calls = sum(v for k, v in m.items() if k.startswith("embedding_proxy_upstream_responses_total"))
    assert calls <= 1 + 2 * 5  # one batch, then at most 2·log2(32) calls to find the bad input


async def test_upstream_killed_and_restarted_during_load(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    simulator = start_simulator()
    proxy = start_proxy(simulator.url, "--request-timeout-ms", "2000", ready_path="/ready")
    outcomes: list[tuple[int, float]] = []
    stop_at = time.monotonic() + 5

    async def caller(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            status, _ = await embed(http, proxy.url, {"inputs": f"caller {n} call {i}"})
            outcomes.append((status, time.monotonic() - started))
            i += 1

    load = asyncio.gather(*(caller(n) for n in range(16)))
    await asyncio.sleep(1)
    simulator.proc.kill()
    simulator.proc.wait()
    await asyncio.sleep(1.5)
    restarted = start_simulator(port=simulator.port)
    await load
    statuses = {status for status, _ in outcomes}
    assert statuses <= {200, 502, 503, 504}
    assert statuses & {502, 504}  # the outage was seen ...
    assert max(seconds for _, seconds in outcomes) < 2.0 + 1.0  # ... and nobody hung in it
    after = [s for s, _ in outcomes[-50:]]
    assert after.count(200) == len(after)  # and it recovered once the upstream was back
    assert restarted.proc.poll() is None


async def test_upstream_too_slow_answers_504_within_the_deadline(
    http: aiohttp.ClientSession, proxy: Process, simulator: Process
) -> None:
    await set_faults(http, simulator, delay_ms=3000)
    started = time.monotonic()
    async with http.post(
        proxy.url + "/embed", json={"inputs": "slow"}, headers={"X-Request-Timeout-Ms": "300"}
    ) as resp:
        body = await resp.json()
    assert resp.status == 504
    assert body["error_type"] == "Timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ({"status": 200, "body": "<html>bad gateway</html>"}, "not JSON"),
        ({"truncate_body": True}, "not JSON"),
        ({"wrong_count": True}, "results for"),
        ({"status": 500, "body": "<html>Internal Server Error</html>"}, "500"),
    ],
)
async def test_broken_upstream_answers_are_502_for_that_batch_only(
    http: aiohttp.ClientSession, proxy: Process, simulator: Process, fault: dict, needle: str
) -> None:
    await set_faults(http, simulator, times=1, **fault)
    status, body = await embed(http, proxy.url, {"inputs": ["a", "b"]})
    assert status == 502
    assert body["error_type"] == "Upstream" and needle in body["error"]
    status, body = await embed(http, proxy.url, {"inputs": ["a", "b"]})  # the next one is fine
    assert status == 200 and close(body[1], embedding("b"))


async def test_overload_and_unavailability_are_retried(
    http: aiohttp.ClientSession, proxy: Process, simulator: Process
) -> None:
    await set_faults(
        http,
        simulator,
        status=503,
        times=2,
        body='{"error":"model not ready","error_type":"Unhealthy"}',
    )
    status, body = await embed(http, proxy.url, {"inputs": "retry me"})
    assert status == 200 and close(body[0], embedding("retry me"))
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_upstream_retries_total{reason=503}"] == 2


async def test_callers_that_leave_are_never_computed(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    simulator = start_simulator("--no-internal-batching", "--base-ms", "400")
    proxy = start_proxy(
        simulator.url, "--max-concurrency", "1", "--max-batch-size", "1", ready_path="/ready"
    )
    first = asyncio.create_task(embed(http, proxy.url, {"inputs": "the one that stays"}))
    await asyncio.sleep(0.1)  # now in flight; what follows waits in the queue

    async def leave(i: int) -> None:
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                proxy.url + "/embed",
                json={"inputs": f"leaver {i}"},
                timeout=aiohttp.ClientTimeout(total=0.1),
            ):
                pass

    await asyncio.gather(*(leave(i) for i in range(10)))
    status, _ = await first
    assert status == 200
    await asyncio.sleep(1.0)  # time enough for any leftover to be (wrongly) sent
    stats = await sim_stats(http, simulator)
    assert stats["inputs_total"] == 1
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_queue_depth"] == 0


async def test_sigterm_under_load_answers_every_accepted_request(
    start_proxy: Starter, start_simulator: Starter
) -> None:
    # A 200 ms forward pass keeps work queued and in flight when the drain delay ends.
    simulator = start_simulator("--base-ms", "200")
    proxy = start_proxy(simulator.url, "--drain-seconds", "1.0", ready_path="/ready")
    answered: list[int] = []
    lost: list[str] = []
    # Callers behave as Kubernetes clients do: they keep sending until the endpoint is removed
    # (inside the drain delay), then send nothing new. Every request sent must get its answer.
    stop_at = [time.monotonic() + 60]
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def caller(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at[0]:
                try:
                    status, _ = await embed(http, proxy.url, {"inputs": f"{n}-{i}"})
                    answered.append(status)
                except aiohttp.ClientError as e:
                    lost.append(repr(e))
                i += 1

        load = asyncio.gather(*(caller(n) for n in range(64)))
        await asyncio.sleep(1)
        proxy.signal(signal.SIGTERM)
        signalled = time.monotonic()
        stop_at[0] = signalled + 0.7
        await asyncio.sleep(0.1)
        async with http.get(proxy.url + "/ready") as resp:
            ready_during_drain = resp.status
        # Sent last, just inside the drain delay: answered after the delay, while draining.
        await asyncio.sleep(0.8)
        status, _ = await embed(http, proxy.url, {"inputs": "last one"})
        answered.append(status)
        last_answered = time.monotonic() - signalled
        await load
    assert proxy.proc.wait(15) == 0
    assert lost == []
    assert ready_during_drain == 503  # unready at once, while still serving
    assert set(answered) == {200}
    assert len(answered) > 100
    assert last_answered > 1.0  # it was queued or in flight when the drain delay ended
    assert "drained: all work answered" in proxy.output()


async def test_after_the_drain_delay_new_requests_are_refused(
    start_proxy: Starter, start_simulator: Starter
) -> None:
    simulator = start_simulator("--base-ms", "1500")
    proxy = start_proxy(simulator.url, "--drain-seconds", "0.2", ready_path="/ready")
    async with aiohttp.ClientSession() as http:
        slow = asyncio.create_task(embed(http, proxy.url, {"inputs": "in flight"}))
        await asyncio.sleep(0.3)
        proxy.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # past the drain delay, the slow call still in flight
        async with http.post(proxy.url + "/embed", json={"inputs": "too late"}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error_type"] == "Unhealthy"
        assert (await slow)[0] == 200
    assert proxy.proc.wait(15) == 0


def write_config(directory: Path, name: str, text: str) -> Path:
    """Lay out a config directory as a Kubernetes ConfigMap volume does: the file is a symlink
    through `..data`, itself a symlink to a timestamped directory, swapped atomically."""
    version_dir = directory / f"..{name}"
    version_dir.mkdir()
    (version_dir / "config.yaml").write_text(text)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(version_dir.name)
    os.replace(tmp, directory / "..data")
    link = directory / "config.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/config.yaml")
    return link


async def test_config_swapped_by_symlink_under_load(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    path = write_config(config_dir, "v1", "version: v1\nbatching:\n  max_batch_size: 2\n")
    proxy = start_proxy(simulator.url, "--config", str(path), ready_path="/ready")
    statuses: list[int] = []
    stop_at = time.monotonic() + 4.5

    async def caller(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            status, _ = await embed(http, proxy.url, {"inputs": f"{n}-{i}"})
            statuses.append(status)
            i += 1

    load = asyncio.gather(*(caller(n) for n in range(48)))
    await asyncio.sleep(1)
    before = await metrics(http, proxy.url)
    write_config(config_dir, "v2", "version: v2\nbatching:\n  max_batch_size: 16\n")
    await asyncio.sleep(2.5)
    after = await metrics(http, proxy.url)
    write_config(config_dir, "v3", "version: v3\nbatching:\n  max_batch_size: -1\n")
    await load
    await asyncio.sleep(1.5)
    final = await metrics(http, proxy.url)

    assert set(statuses) == {200}  # nothing dropped across the swaps
    assert before["embedding_proxy_config_info{version=v1}"] == 1
    assert (
        before["embedding_proxy_batch_size_bucket{le=2.0}"]
        == before["embedding_proxy_batch_size_count"]
    )
    assert after["embedding_proxy_config_info{version=v2}"] == 1
    assert "embedding_proxy_config_info{version=v1}" not in after
    grew = (
        after["embedding_proxy_batch_size_count"]
        - after["embedding_proxy_batch_size_bucket{le=2.0}"]
    )
    assert grew > 0  # batches above the old cap after the swap
    assert final["embedding_proxy_config_info{version=v2}"] == 1  # the invalid v3 was refused
    assert final["embedding_proxy_config_reloads_total{result=failed}"] >= 1
    assert "batching.max_batch_size" in proxy.output()


async def test_sighup_reloads_the_file(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: first\n")
    proxy = start_proxy(simulator.url, "--config", str(path), ready_path="/ready")
    path.write_text("version: second\n")
    os.utime(path, (0, 0))  # same size, old mtime: only SIGHUP can tell
    proxy.signal(signal.SIGHUP)
    for _ in range(50):
        m = await metrics(http, proxy.url)
        if "embedding_proxy_config_info{version=second}" in m:
            break
        await asyncio.sleep(0.1)
    assert m["embedding_proxy_config_info{version=second}"] == 1


async def test_random_bodies_never_get_a_5xx(http: aiohttp.ClientSession, proxy: Process) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from tests.helpers.bodies import bodies

    routes = ["/embed", "/embed_sparse", "/embed_all", "/predict", "/tokenize", "/v1/embeddings"]
    seen: list[tuple[str, bytes, int, bytes]] = []

    @settings(
        max_examples=min(150, settings.default.max_examples),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies, route=st.sampled_from(routes))
    def record(body: bytes, route: str) -> None:
        seen.append((route, body, 0, b""))

    record()
    for i, (route, body, _, _) in enumerate(seen):
        async with http.post(
            proxy.url + route, data=body, headers={"Content-Type": "application/json"}
        ) as r:
            seen[i] = (route, body, r.status, await r.read())
    for route, body, status, answer in seen:
        assert status < 500, (route, body, status, answer)
        if status >= 400:
            parsed = orjson.loads(answer)
            keys = (
                {"message", "code", "type"}
                if route == "/v1/embeddings"
                else {"error", "error_type"}
            )
            assert set(parsed) == keys, (route, body, parsed)
