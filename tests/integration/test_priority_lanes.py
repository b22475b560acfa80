"""Priority lanes between real processes on loopback: callers, proxy, TEI simulator. One long
input (the simulator charges 8 ms a token past 100) holds the proxy's only upstream slot for about
3 s while the requests under test queue up, so what waits in which lane is known; the order
answers come back in is what is checked, never how long they took."""

from __future__ import annotations

import asyncio

import aiohttp
from tests.helpers.calls import metrics
from tests.helpers.processes import Process, Starter


async def post(
    http: aiohttp.ClientSession,
    proxy: Process,
    inputs: list[str],
    lane: str | None = None,
    key: str | None = None,
) -> tuple[int, object, dict[str, str]]:
    headers = {"X-Priority": lane} if lane else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with http.post(proxy.url + "/embed", json={"inputs": inputs}, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


SLOW = (
    "--no-internal-batching",
    "--base-ms",
    "50",
    "--knee-tokens",
    "100",
    "--per-token-us",
    "8000",
)
LONG = " ".join(["word"] * 400)  # about 400 tokens: the one slow pass


async def until(http: aiohttp.ClientSession, proxy: Process, sample: str, least: float) -> None:
    """Wait until the metric `sample` reads at least `least` (generous: the machine is busy)."""
    for _ in range(600):
        if (await metrics(http, proxy.url)).get(sample, 0) >= least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sample} never reached {least}")


async def test_a_full_batch_lane_refuses_only_its_own_callers_and_interactive_goes_first(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    slow = start_simulator(*SLOW)
    proxy = start_proxy(
        slow.url,
        "--lanes",
        "interactive:4,batch:8:0.25",
        "--max-concurrency",
        "1",
        "--max-batch-size",
        "4",
        ready_path="/ready",
    )
    done: list[str] = []

    async def call(name: str, inputs: list[str], lane: str | None) -> tuple[int, object, dict]:
        answer = await post(http, proxy, inputs, lane)
        done.append(name)
        return answer

    blocker = asyncio.create_task(call("blocker", [LONG], None))
    await until(http, proxy, "embedding_proxy_inflight_inputs", 1)
    bulk = asyncio.create_task(call("bulk", [f"b{i}" for i in range(8)], "batch"))
    await until(http, proxy, "embedding_proxy_lane_queue_depth{lane=batch}", 8)
    status, body, headers = await post(http, proxy, ["c"], "batch")
    assert status == 429 and "lane 'batch' is full" in body["error"]  # type: ignore[index]
    assert int(headers["Retry-After"]) >= 1
    # The interactive lane is not full: its request is taken, and goes in the next batch beside
    # the batch lane's reserved quarter, ahead of the rest of the bulk request.
    status, body, _ = await call("query", ["q"], None)
    assert status == 200 and len(body) == 1  # type: ignore[arg-type]
    status, body, _ = await bulk
    assert status == 200 and len(body) == 8  # type: ignore[arg-type]
    assert (await blocker)[0] == 200
    assert done == ["blocker", "query", "bulk"]
    status, body, _ = await post(http, proxy, ["x"], "urgent")
    assert status == 400 and "unknown lane 'urgent'" in body["error"]  # type: ignore[index]
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_lane_rejected_total{lane=batch}"] == 1
    assert m.get("embedding_proxy_lane_rejected_total{lane=interactive}", 0) == 0
    assert m["embedding_proxy_rejections_total{reason=queue_full}"] == 1
    assert m["embedding_proxy_lane_wait_seconds_count{lane=batch}"] == 8
    assert m["embedding_proxy_lane_wait_seconds_count{lane=interactive}"] == 2
    assert m["embedding_proxy_lane_queue_depth{lane=interactive}"] == 0


async def test_callers_of_a_lane_take_turns_and_keys_set_their_lane(
    http: aiohttp.ClientSession, start_proxy: Starter, start_simulator: Starter
) -> None:
    slow = start_simulator(*SLOW)
    proxy = start_proxy(
        slow.url,
        "--api-keys",
        "user,bulk-p lane=batch,bulk-q lane=batch",
        "--max-concurrency",
        "1",
        "--max-batch-size",
        "8",
        ready_path="/ready",
    )
    status, body, _ = await post(http, proxy, ["x"], "interactive", key="bulk-p")
    assert status == 403 and "may use lane 'batch'" in body["error"]  # type: ignore[index]
    done: list[str] = []

    async def call(name: str, key: str, n: int) -> int:
        inputs = [LONG] if name == "blocker" else [f"{name}-{i}" for i in range(n)]
        status, _, _ = await post(http, proxy, inputs, key=key)
        done.append(name)
        return status

    blocker = asyncio.create_task(call("blocker", "user", 1))
    await until(http, proxy, "embedding_proxy_inflight_inputs", 1)
    # While the only upstream slot is busy, p queues four requests of 8 inputs, then q one.
    p = [asyncio.create_task(call(f"p{r}", "bulk-p", 8)) for r in range(4)]
    await until(http, proxy, "embedding_proxy_lane_queue_depth{lane=batch}", 32)
    q = asyncio.create_task(call("q", "bulk-q", 8))
    await until(http, proxy, "embedding_proxy_lane_queue_depth{lane=batch}", 40)
    assert await asyncio.gather(blocker, *p, q) == [200] * 6
    # First come first served would answer q last; turn by turn, q and p share each batch, and
    # q's 8 inputs are done with p's first 8: three of p's requests are answered after q's.
    assert sum(done.index(f"p{r}") > done.index("q") for r in range(4)) == 3
    m = await metrics(http, proxy.url)
    assert m["embedding_proxy_lane_wait_seconds_count{lane=batch}"] == 40
    assert m["embedding_proxy_lane_wait_seconds_count{lane=interactive}"] == 1
