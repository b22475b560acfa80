"""CORS as TEI answers it (router/src/http/server.rs, `run`: tower-http's CorsLayer around every
route, GET and POST with a Content-Type header, any origin unless `--cors-allow-origin` names
some): a browser may call the proxy wherever it may call TEI. Real processes: the proxy in front
of a scripted TEI that sends CORS headers of its own, which must not reach the caller twice."""

from __future__ import annotations

import aiohttp
from tests.helpers.calls import wait_ready
from tests.helpers.processes import Starter
from tests.helpers.scripted import Received, Reply, answer, scripted, tei_like

VARY = "origin, access-control-request-method, access-control-request-headers"
PREFLIGHT = {"Origin": "http://a.example", "Access-Control-Request-Method": "POST"}


def teis_own_cors(request: Received) -> Reply:
    if request.target == "/decode":
        headers = [
            ("Content-Type", "application/json"),
            ("Access-Control-Allow-Origin", "*"),
            ("Vary", VARY),
        ]
        return answer(200, b'["text"]', headers), False
    return tei_like(request)


async def test_any_origin_by_default_on_every_kind_of_answer(start_proxy: Starter) -> None:
    async with scripted(teis_own_cors) as upstream:
        proxy = start_proxy(upstream.url, "--api-keys", "k")
        async with aiohttp.ClientSession(headers={"Origin": "http://a.example"}) as s:
            await wait_ready(s, proxy.url)
            key = {"Authorization": "Bearer k"}
            calls = [
                ("POST", "/embed", {"inputs": "a"}, key, 200),  # batched
                ("POST", "/decode", {"ids": [1]}, key, 200),  # forwarded, TEI's own CORS
                ("GET", "/health", None, {}, 200),
                ("POST", "/embed", {"inputs": "a"}, {}, 401),  # refused from the head
            ]
            for method, path, body, headers, status in calls:
                async with s.request(method, proxy.url + path, json=body, headers=headers) as r:
                    assert r.status == status, path
                    assert r.headers.getall("Access-Control-Allow-Origin") == ["*"], path
                    assert r.headers.getall("Vary") == [VARY], path
            async with s.options(proxy.url + "/embed", headers=PREFLIGHT) as r:
                assert r.status == 200 and await r.read() == b""
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                assert r.headers["Access-Control-Allow-Methods"] == "GET,POST"
                assert r.headers["Access-Control-Allow-Headers"] == "content-type"
        # The preflight is answered by the proxy, as by TEI's CORS layer: never forwarded.
        assert not [r for r in upstream.received if r.method == "OPTIONS"]


async def test_cors_allow_origin_narrows_it(start_proxy: Starter) -> None:
    async with scripted(teis_own_cors) as upstream:
        flags = ["--cors-allow-origin", "http://a.example,http://b.example:8080"]
        proxy = start_proxy(upstream.url, *flags)
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            for origin, allowed in [
                ("http://a.example", True),
                ("http://b.example:8080", True),
                ("http://c.example", False),
            ]:
                for method, path, body in [
                    ("POST", "/embed", {"inputs": "a"}),
                    ("POST", "/decode", {"ids": [1]}),
                    ("OPTIONS", "/embed", None),
                ]:
                    headers = {"Origin": origin}
                    async with s.request(method, proxy.url + path, json=body, headers=headers) as r:
                        assert r.status == 200, path
                        expected = [origin] if allowed else []
                        got = r.headers.getall("Access-Control-Allow-Origin", [])
                        assert got == expected, (origin, path)
                        assert r.headers.getall("Vary") == [VARY], path
