"""What a caller puts in a request, against a real proxy and simulator: unknown fields make no
parameter groups (memory measured), TEI's parser's answers for bad fields, the timeout header,
and an upstream URL's credentials, which are never shown."""

from __future__ import annotations

import asyncio

import aiohttp
import psutil
from tests.helpers.calls import metrics
from tests.helpers.processes import Process, Starter, free_port

MiB = 2**20


async def test_unknown_fields_make_no_groups_and_hold_no_memory(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    pad = "x" * 1_000_000
    rss = psutil.Process(proxy.proc.pid).memory_info

    async def send(i: int, field: str = "junk") -> int:
        async with http.post(proxy.url + "/embed", json={"inputs": "hi", field: f"{i}-{pad}"}) as r:
            await r.read()
            return r.status

    assert await send(-1) == 200
    before = rss().rss
    sem = asyncio.Semaphore(4)

    async def limited(i: int) -> int:
        async with sem:
            return await send(i)

    statuses = await asyncio.gather(*(limited(i) for i in range(300)))
    assert set(statuses) == {200}
    assert (await metrics(http, proxy.url))["embedding_proxy_groups"] == 1
    # Each request held 1 MB; before, each made a group that kept it for 60 s (+300 MiB here).
    grown = (rss().rss - before) / MiB
    assert grown < 100, f"RSS grew {grown:.0f} MiB"
    # A known parameter may not be huge either: it would be a group's key.
    assert await send(0, "prompt_name") == 413


async def test_bad_fields_get_tei_parsers_answers(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    for value in ("[]", "{}", "0", "false", "null"):
        raw = b'{"input": "a", "encoding_format": %s}' % value.encode()
        async with http.post(
            proxy.url + "/v1/embeddings", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 422 and body["type"] == "Validation", (value, body)
    for route, raw in (
        ("/embed", b'{"inputs": "a", "inputs": ["b", "c"]}'),
        ("/embed", b'{"inputs": "a", "normalize": true, "normalize": false}'),
        ("/v1/embeddings", b'{"input": "a", "input": "b"}'),
    ):
        async with http.post(
            proxy.url + route, data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            text = await resp.text()
            assert resp.status == 422 and "duplicate field" in text, (route, text)


async def test_the_timeout_header_must_be_a_positive_number(
    http: aiohttp.ClientSession, proxy: Process
) -> None:
    for value in ("nan", "-5", "0", "0.0", "inf", "1e3", "1_000", "", "5ms", "abc"):
        async with http.post(
            proxy.url + "/embed", json={"inputs": "a"}, headers={"X-Request-Timeout-Ms": value}
        ) as resp:
            body = await resp.json()
            assert resp.status == 400 and "X-Request-Timeout-Ms" in body["error"], value
    for value in ("20000", "15000.5"):
        async with http.post(
            proxy.url + "/embed", json={"inputs": "a"}, headers={"X-Request-Timeout-Ms": value}
        ) as resp:
            assert resp.status == 200, value


async def test_upstream_credentials_are_never_shown(
    http: aiohttp.ClientSession, start_proxy: Starter
) -> None:
    secret = "pw-0123456789abcdef"
    upstream = f"http://someone:{secret}@127.0.0.1:{free_port()}"  # nothing listens there
    proxy = start_proxy(upstream, "--log-level", "debug")
    shown = []
    for _ in range(3):
        async with http.get(proxy.url + "/ready") as resp:
            shown.append(await resp.text())
            assert resp.status == 503
        for path in ("/embed", "/info"):
            async with http.request(
                "POST" if path == "/embed" else "GET",
                proxy.url + path,
                json={"inputs": "a"},
                # The URL's credentials are lent only to a caller who holds them.
                headers={"Authorization": aiohttp.BasicAuth("someone", secret).encode()},
            ) as resp:
                shown.append(await resp.text())
                assert resp.status == 502
        await asyncio.sleep(0.5)
    proxy.stop()
    shown.append(proxy.output())
    assert "127.0.0.1" in shown[0] and "***@" in shown[0]  # the address, without the secret
    for text in shown:
        assert secret not in text and "someone" not in text, text
