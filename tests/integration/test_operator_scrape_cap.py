"""A pod's /metrics page is read up to a cap: a pod that streams without end (or claims a huge
length) counts as not scraped, instead of filling the operator's memory. Real HTTP on loopback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from embedding_proxy_operator.io.fetch import MetricsFetcher

CAP = 64 * 1024
PAGE = 'embedding_proxy_config_info{version="abc"} 1\n'


async def endless(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()  # chunked, no Content-Length
    await resp.prepare(request)
    line = b"# " + b"x" * 1022 + b"\n"
    while True:  # the client hangs up once it has read enough
        await resp.write(line * 64)


async def huge_length(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Length": str(1 << 40)})
    await resp.prepare(request)
    await resp.write(b"# only a little\n")  # refused on the header alone
    return resp


async def small(request: web.Request) -> web.Response:
    return web.Response(text=PAGE)


@pytest.fixture
async def pods() -> AsyncIterator[dict[str, str]]:
    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/huge", huge_length)
    app.router.add_get("/metrics", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.7", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.7:{port}"
    yield {"endless": base + "/endless", "huge": base + "/huge", "ok": base + "/metrics"}
    await runner.cleanup()


async def test_an_endless_page_is_a_failed_scrape_logged_once(
    pods: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # A timeout far longer than the endless page takes to pass the cap: the cap ends it.
    fetcher = MetricsFetcher(timeout_seconds=60, max_bytes=CAP)
    try:
        with caplog.at_level(logging.WARNING, logger="embedding_proxy_operator.io.fetch"):
            for _ in range(3):
                got = await fetcher.texts([pods["endless"], pods["huge"], pods["ok"]])
                assert got == [None, None, PAGE]
        warned = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
        assert sorted(warned) == sorted(
            f"{u}: /metrics is longer than {CAP} bytes; the pod counts as not scraped"
            for u in (pods["endless"], pods["huge"])
        )
    finally:
        await fetcher.close()


async def test_a_page_at_the_cap_is_read_whole(pods: dict[str, str]) -> None:
    fetcher = MetricsFetcher(timeout_seconds=60, max_bytes=len(PAGE))
    try:
        assert await fetcher.texts([pods["ok"]]) == [PAGE]
    finally:
        await fetcher.close()
    fetcher = MetricsFetcher(timeout_seconds=60, max_bytes=len(PAGE) - 1)
    try:
        assert await fetcher.texts([pods["ok"]]) == [None]
    finally:
        await fetcher.close()


def test_the_cap_is_a_setting() -> None:
    from embedding_proxy_operator.model.settings import PREFIX, Options

    assert Options.from_env({}).scrape_max_bytes == 1 << 20
    assert Options.from_env({PREFIX + "SCRAPE_MAX_BYTES": "4096"}).scrape_max_bytes == 4096
    with pytest.raises(ValueError):
        Options.from_env({PREFIX + "SCRAPE_MAX_BYTES": "0"})
