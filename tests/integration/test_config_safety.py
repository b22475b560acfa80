"""A live reload never lowers security by accident, and a bad upstream URL never shows its
password: a real `embedding-proxy serve` with a config file rewritten under it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp
from tests.helpers.processes import Process, Starter, free_port, proxy_args, wait_http

KEY = "key-0123456789abcdef"
WITH_KEY = f"version: keyed\nauth:\n  api_keys: [{KEY}]\n"
RELOAD_SECONDS = 15.0  # the watcher looks once a second; a slow machine may take longer


async def keyless(http: aiohttp.ClientSession, proxy: Process) -> int:
    async with http.post(proxy.url + "/embed", json={"inputs": "hi"}) as resp:
        await resp.read()
        return resp.status


def replace(path: Path, text: str) -> None:
    """Rewrite the file at once (a new file renamed over it), as a ConfigMap update does."""
    new = path.with_suffix(".new")
    new.write_text(text)
    new.replace(path)


async def logged(proxy: Process, needle: str, count: int) -> None:
    end = time.monotonic() + RELOAD_SECONDS
    while proxy.output().count(needle) < count:
        assert time.monotonic() < end, f"{needle!r} not logged {count} times"
        await asyncio.sleep(0.2)


async def test_a_reload_that_would_turn_keys_off_is_refused_unless_the_file_says_so(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(WITH_KEY)
    proxy = start_proxy(simulator.url, "--config", str(config), ready_path="/ready")
    assert await keyless(http, proxy) == 401
    refusals = 0
    # Blank documents, and one cut short before its auth section (as a rewrite in place is).
    # (tests/unit/proxy/test_reload_safety.py tries null and `---` too.)
    blank = ("", "{}\n", "# nothing yet\n", "batching:\n  max_wait_ms: 2\n")
    for refusals, text in enumerate(blank, 1):
        replace(config, text)
        await logged(proxy, "config reload refused", refusals)
        assert await keyless(http, proxy) == 401, repr(text)
    log = proxy.output()
    assert log.count("holds no settings") == 3
    assert "turns client keys off without saying so" in log

    # Rewritten in place, truncated first: no keyless request gets through meanwhile.
    statuses: list[int] = []

    async def knock() -> None:
        while len(statuses) < 400:
            statuses.append(await keyless(http, proxy))

    knocking = asyncio.create_task(knock())
    for _ in range(10):
        with config.open("w") as f:
            f.flush()
            await asyncio.sleep(0.05)
            f.write(WITH_KEY)
        await asyncio.sleep(0.3)
    await knocking
    assert set(statuses) == {401}

    # Said in so many words, keys go.
    replace(config, "version: open\nauth:\n  api_keys: []\n")
    end = time.monotonic() + RELOAD_SECONDS
    while await keyless(http, proxy) != 200:
        assert time.monotonic() < end, "keys not turned off by a file that says so"
        await asyncio.sleep(0.2)


async def test_a_reload_that_would_turn_the_rate_limit_off_is_refused(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text("limits:\n  rate_per_second: 1\n  rate_burst: 1\n")
    proxy = start_proxy(simulator.url, "--config", str(config), ready_path="/ready")
    replace(config, "batching:\n  max_wait_ms: 2\n")
    await logged(proxy, "turns the rate limit off without saying so", 1)
    statuses = [await keyless(http, proxy) for _ in range(5)]
    assert 429 in statuses


def test_a_password_that_breaks_the_url_is_never_shown(tmp_path: Path) -> None:
    """At start; tests/unit/proxy/test_reload_safety.py tries `/` and `?` too."""
    password = "pa#ss"
    secret = password + "-SECRET"
    upstream = f"http://someone:{secret}@127.0.0.1:{free_port()}"
    done = subprocess.run(
        proxy_args(upstream, free_port()), capture_output=True, text=True, timeout=60
    )
    shown = done.stdout + done.stderr
    assert done.returncode == 2, shown
    assert "upstream.url" in shown
    # Nor a part of it: a URL parser quotes what it took for the port ('pa').
    for part in ("SECRET", "someone", "'pa'", password):
        assert part not in shown, shown


async def test_a_reloaded_password_that_breaks_the_url_is_never_logged(
    start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(f"upstream:\n  url: {simulator.url}\n")
    port = free_port()
    # The file, not a flag, names the upstream: a flag would win over the reloaded file.
    args = [a for a in proxy_args(simulator.url, port) if a not in ("--upstream", simulator.url)]
    log = tmp_path / "proxy.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*args, "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    process = Process(proc, port, log)
    try:
        wait_http(process.url + "/ready", proc=proc)
        replace(config, "upstream:\n  url: http://someone:pa#ss-SECRET@127.0.0.1:9\n")
        await logged(process, "config reload refused", 1)
    finally:
        process.stop()
    assert "SECRET" not in process.output() and "someone" not in process.output()
