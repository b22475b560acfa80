"""The two-population load generator, run as its own process
(`python -m embedding_proxy.bench.mix_load`), with bench/load.py's protocol (parent.py):

    parent -> spec            child -> {"phase": "warm"}   (every worker has run `warmup_s`)
    parent -> {"go": true}    child -> result              (after `duration_s` more)

Interactive callers send one input each, in a closed loop. Each batch client keeps `queued`
inputs outstanding at all times: `queued / size` connections, each sending its next request of
`size` inputs as soon as its last one is answered. Every worker runs without pause from start to
end; only answers that arrive inside the measured window count. Every input is a distinct text,
so no answer comes from the simulator's vector cache.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..serve import run
from . import rawhttp
from .parent import Parent
from .tally import Tally, summary
from .workload import make_text


def client_summary(name: str, tally: Tally, seconds: float) -> dict[str, Any]:
    """One client's answers inside the window (`seconds` long), as the bench reports them."""
    s = summary(tally, seconds, 0.0)
    return {
        "name": name,
        "ok": s["ok"],
        "failed": s["failed"],
        "inputs": s["inputs_ok"],
        "inputs_per_s": s["inputs_per_s"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "statuses": s["statuses"],
        "first_error": s["first_error"],
    }


class Window:
    """The measured part: answers that arrive between `start` and `end` count."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


async def worker(
    spec: dict[str, Any],
    who: Tally,
    size: int,
    headers: str,
    window: Window,
    texts: itertools.count[int],
    salt: str,
) -> None:
    parts = urlsplit(spec["url"])
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    tokens, timeout = spec["tokens"], spec["timeout_s"]
    conn = await rawhttp.connect(host, port)
    while True:
        inputs: str | list[str] = [make_text(salt, next(texts), tokens) for _ in range(size)]
        body = orjson.dumps({"inputs": inputs[0] if size == 1 else inputs})
        data = rawhttp.build_request(host, port, path, body, headers)
        started = time.perf_counter()
        try:
            if conn.closed:
                conn = await rawhttp.connect(host, port)
            status, answer = await conn.request(data, timeout)
        except (OSError, rawhttp.HttpError, TimeoutError) as e:
            conn.close()
            conn.closed = True
            if window.holds(time.perf_counter()):
                who.fail(type(e).__name__, str(e))
            await asyncio.sleep(0.01)
            continue
        done = time.perf_counter()
        if not window.holds(done):
            continue
        if status == 200 and answer.count(b"[") == size + 1:
            who.ok += 1
            who.inputs_ok += size
            who.latencies.append(done - started)
        else:
            who.fail(str(status), rawhttp.error_text(answer))


def _header(key: str | None) -> str:
    return f"Authorization: Bearer {key}\r\n" if key else ""


async def main_async() -> None:
    loop = asyncio.get_running_loop()
    parent = await Parent.connect("mix")
    spec = await parent.receive()
    window = Window()
    texts = itertools.count()
    interactive = Tally()
    tasks = [
        worker(spec, interactive, 1, _header(spec["interactive_key"]), window, texts, "i")
        for _ in range(spec["interactive"])
    ]
    batch: list[Tally] = []
    for n, client in enumerate(spec["batch_clients"]):
        who = Tally()
        batch.append(who)
        size = client["size"]
        tasks += [
            worker(spec, who, size, _header(client["key"]), window, texts, f"b{n}-")
            for _ in range(max(1, client["queued"] // size))
        ]
    running = [loop.create_task(t) for t in tasks]
    try:
        await asyncio.sleep(spec["warmup_s"])
        await parent.warm()
        cpu0 = time.process_time()
        window.start = time.perf_counter()
        await asyncio.sleep(spec["duration_s"])
        window.end = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    seconds = window.end - window.start
    parent.send(
        {
            "wall_s": seconds,
            "loadgen_cpu_s": cpu,
            "interactive": client_summary("interactive", interactive, seconds),
            "batch": [client_summary(f"batch-{n}", who, seconds) for n, who in enumerate(batch)],
        }
    )


def main() -> None:
    run(main_async)


if __name__ == "__main__":
    main()
