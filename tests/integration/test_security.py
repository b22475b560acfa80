"""Client keys, rate limits and size limits on a real proxy process; no key in any log line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from tests.helpers.processes import Process, Starter

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"


async def post(
    http: aiohttp.ClientSession, proxy: Process, key: str | None, body: dict | None = None
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.post(
        proxy.url + "/embed", json=body or {"inputs": "hi"}, headers=headers
    ) as resp:
        await resp.read()
        return resp


async def test_keys_from_the_environment_and_a_reloaded_file(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_A}\n")
    proxy = start_proxy(
        simulator.url,
        "--log-level",
        "debug",
        ready_path="/ready",
        env={
            "EMBEDDING_PROXY_AUTH__API_KEYS_FILE": str(keys),
            "EMBEDDING_PROXY_AUTH__API_KEYS": "env-key-1",
        },
    )
    assert (await post(http, proxy, None)).status == 401
    wrong = await post(http, proxy, "nope")
    assert wrong.status == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert (await post(http, proxy, KEY_A)).status == 200
    assert (await post(http, proxy, "env-key-1")).status == 200
    async with http.get(proxy.url + "/ready") as ready, http.get(proxy.url + "/health") as health:
        assert (ready.status, health.status) == (200, 200)  # probes stay open

    replacement = tmp_path / "keys.new"
    replacement.write_text(f"{KEY_B}\n")
    replacement.replace(keys)
    deadline = time.monotonic() + 5
    while (await post(http, proxy, KEY_B)).status != 200:
        assert time.monotonic() < deadline, "new key not picked up"
        await asyncio.sleep(0.2)
    assert (await post(http, proxy, KEY_A)).status == 401  # the old one is gone, no restart

    log = proxy.output()
    for secret in (KEY_A, KEY_B, "env-key-1"):
        assert secret not in log


async def test_rate_limit_answers_429_with_retry_after_and_recovers(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    proxy = start_proxy(
        simulator.url,
        ready_path="/ready",
        env={
            "EMBEDDING_PROXY_LIMITS__RATE_PER_SECOND": "5",
            "EMBEDDING_PROXY_LIMITS__RATE_BURST": "5",
        },
    )
    answers = [await post(http, proxy, None) for _ in range(8)]
    statuses = [a.status for a in answers]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    limited = next(a for a in answers if a.status == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    await asyncio.sleep(1.2)
    assert (await post(http, proxy, None)).status == 200


async def test_size_limits(
    http: aiohttp.ClientSession, start_proxy: Starter, simulator: Process
) -> None:
    proxy = start_proxy(
        simulator.url,
        ready_path="/ready",
        env={
            "EMBEDDING_PROXY_LIMITS__MAX_INPUTS_PER_REQUEST": "4",
            "EMBEDDING_PROXY_LIMITS__MAX_INPUT_CHARS": "50",
            "EMBEDDING_PROXY_SERVER__MAX_BODY_BYTES": "4096",
        },
    )
    assert (await post(http, proxy, None, {"inputs": ["a"] * 5})).status == 413
    assert (await post(http, proxy, None, {"inputs": "x" * 51})).status == 413
    assert (await post(http, proxy, None, {"inputs": ["y" * 40] * 4})).status == 200
    async with http.post(
        proxy.url + "/embed",
        data=b'{"inputs": "' + b"z" * 5000 + b'"}',
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error_type"] == "Validation"
