"""The upstream client on its own (whatever the HTTP server lets through) talks only to the
configured upstream: scripted peers on loopback sockets, one of which must receive nothing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.helpers.scripted import answer, scripted, tei_like

from embedding_proxy.api.errors import ProxyError
from embedding_proxy.api.forwarding import answer_headers, named_by_connection
from embedding_proxy.config.settings import UpstreamConfig
from embedding_proxy.telemetry.metrics import Metrics
from embedding_proxy.upstream.client import Upstream


async def forward(upstream: Upstream, path: str, query: str = "") -> tuple[int, bytes]:
    deadline = asyncio.get_running_loop().time() + 10
    status, _, body = await upstream.forward("GET", path, query, {}, b"", deadline)
    return status, body


async def test_only_origin_form_targets_are_forwarded_and_only_upstream() -> None:
    async with scripted() as tei, scripted() as victim:
        upstream = Upstream(UpstreamConfig(url=tei.url + "/prefix/"), Metrics())
        await upstream.start()
        try:
            for path, query in (
                (f"*@127.0.0.1:{victim.port}/steal", ""),
                (f"@127.0.0.1:{victim.port}/steal", ""),
                (f"127.0.0.1:{victim.port}", ""),
                (f"http://127.0.0.1:{victim.port}/steal", ""),
                ("*", ""),
                ("", ""),
                ("/x#y", ""),
                ("/x y", ""),
                ("/x\r\nHost: evil", ""),
                ("/x", "a=1#frag"),
                ("/x", "a b"),
            ):
                with pytest.raises(ProxyError) as refused:
                    await forward(upstream, path, query)
                assert refused.value.status == 400, (path, query)
            status, _ = await forward(upstream, f"//127.0.0.1:{victim.port}/x", "to=@evil:1")
            assert status == 200
            assert [r.target for r in tei.received] == [
                f"/prefix//127.0.0.1:{victim.port}/x?to=@evil:1"
            ]
            # Whatever asks it, the session goes nowhere else, redirects included.
            with pytest.raises(aiohttp.InvalidUrlClientError):
                await upstream.general_client.get(victim.url + "/steal")
            tei.script = lambda r: (answer(302, b"", [("Location", victim.url + "/")]), False)
            with pytest.raises(ProxyError) as info:
                await upstream.fetch_info()
            assert info.value.status == 502
            with pytest.raises(aiohttp.InvalidUrlClientError):
                await upstream.general_client.get(tei.url + "/health")  # a redirect it would follow
            assert victim.connections == 0
        finally:
            await upstream.close()


async def test_credentials_in_the_upstream_url_are_never_shown() -> None:
    async with scripted(tei_like) as tei:
        url = tei.url.replace("://", "://user:s3cret@")
        upstream = Upstream(UpstreamConfig(url=url), Metrics())
        await upstream.start()
        try:
            assert "s3cret" not in upstream.shown and "user" not in upstream.shown
            tei.script = lambda r: (b"", True)  # closes without answering
            with pytest.raises(ProxyError) as failed:
                await forward(upstream, "/info")
            assert failed.value.status == 502 and "s3cret" not in failed.value.message
        finally:
            await upstream.close()


def test_answer_headers_keep_repeats_and_drop_what_is_not_end_to_end() -> None:
    raw = [
        (b"Set-Cookie", b"a=1"),
        (b"Connection", b"X-Hop"),
        (b"X-Hop", b"1"),
        (b"Set-Cookie", b"b=2"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"9"),
        (b"Content-Encoding", b"gzip"),
        (b"X-Bad", b"a\x00b"),
        (b"X Bad", b"1"),
        (b"X-Name", b"caf\xc3\xa9"),
    ]
    assert answer_headers(raw) == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Name", "caf\xc3\xa9"),  # the bytes as received, written back unchanged
    ]
    assert named_by_connection(["close, X-A", None, " x-b ,"]) == {"close", "x-a", "x-b", ""}
