"""A proxy process in front of a scripted upstream on loopback: how it authenticates to TEI, how
a bad input is isolated without multiplying upstream calls, which routes it answers itself, and
what becomes of caller header bytes it cannot pass on as they came."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest
from tests.helpers.calls import wait_ready
from tests.helpers.processes import PYTHON, Starter, free_port
from tests.helpers.scripted import Received, Reply, answer, scripted, tei_like

JSON = [("Content-Type", "application/json")]
TOO_LONG = 2000  # characters: the scripted upstream answers 413 for a batch holding a longer input


def prefixed(prefix: str):  # type: ignore[no-untyped-def]
    """tei_like, under a path prefix."""

    def script(request: Received) -> Reply:
        assert request.target.startswith(prefix), request.target
        request.target = request.target[len(prefix) :] or "/"
        if request.target == "/rerank":
            return answer(200, b'[{"index":0,"score":1.0}]', JSON), False
        return tei_like(request)

    return script


@pytest.mark.parametrize("with_key", [False, True])
async def test_url_credentials_and_key_one_rule_for_every_call(
    start_proxy: Starter, tmp_path: Path, with_key: bool
) -> None:
    async with scripted(prefixed("/pfx")) as upstream:
        flags: list[str] = []
        expected = "Basic " + base64.b64encode(b"u:p w").decode()
        if with_key:
            key = tmp_path / "key"
            key.write_text("k3y\n")
            flags = ["--upstream-api-key-file", str(key)]
            expected = "Bearer k3y"
        url = f"http://u:p%20w@127.0.0.1:{upstream.port}/pfx"
        proxy = start_proxy(url, *flags)
        # The credentials are lent only to callers who present them (test_lent_key.py).
        async with aiohttp.ClientSession(headers={"Authorization": expected}) as s:
            await wait_ready(s, proxy.url)
            async with s.post(f"{proxy.url}/embed", json={"inputs": ["a", "bb"]}) as resp:
                assert resp.status == 200, await resp.text()
            async with s.get(f"{proxy.url}/info") as resp:  # forwarded
                assert resp.status == 200, await resp.text()
            async with s.post(f"{proxy.url}/rerank", json={"query": "q", "texts": ["t"]}) as r:
                assert r.status == 200, await r.text()
        assert {r.target for r in upstream.received} >= {"/embed", "/info", "/rerank", "/health"}
        for request in upstream.received:
            assert request.header("authorization") == [expected], request.target
        output = proxy.output()
        assert "Traceback" not in output and "p w" not in output and "p%20w" not in output
        assert ("the URL's credentials are not" in output) == with_key


async def test_a_bad_input_costs_its_own_caller_few_upstream_calls(start_proxy: Starter) -> None:
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def script(request: Received) -> Reply:
        if request.method != "POST":
            return tei_like(request)
        inputs = orjson.loads(request.body)["inputs"]
        batches.append(inputs)
        if inputs == ["blocker"]:
            await release.wait()
        if any(len(text) > TOO_LONG for text in inputs):
            body = b'{"error":"input too long","error_type":"Validation"}'
            return answer(413, body, JSON), False
        return tei_like(request)

    bad = "word " * 700
    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url, "--max-concurrency", "1", "--max-batch-size", "32")
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)

            async def embed(inputs: list[str]) -> tuple[int, bytes]:
                body = {"inputs": inputs, "truncate": False}
                async with s.post(f"{proxy.url}/embed", json=body) as resp:
                    return resp.status, await resp.read()

            # One caller with bad inputs and one without share a batch: the blocker holds the
            # only upstream slot until both are queued.
            blocker = asyncio.create_task(embed(["blocker"]))
            # The others only once the blocker holds the slot: requests on separate
            # connections need not arrive in the order their tasks were made.
            for _ in range(400):
                if ["blocker"] in batches:
                    break
                await asyncio.sleep(0.05)
            mixed = asyncio.create_task(embed(["ok-1", bad, "ok-2", bad]))
            good = asyncio.create_task(embed(["fine-1", "fine-2", "fine-3"]))
            for _ in range(400):
                async with s.get(f"{proxy.url}/metrics") as resp:
                    text = await resp.text()
                if re.search(r"^embedding_proxy_queue_depth 7\.0$", text, re.M):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the two requests were never queued together")
            release.set()
            assert (await blocker)[0] == 200
            status, body = await mixed
            assert status == 413 and b"input too long" in body
            status, body = await good
            assert status == 200 and len(orjson.loads(body)) == 3
            assert any("fine-1" in b and bad in b for b in batches)  # they did share a batch
            # The split stops at parts that hold one caller's inputs only: that caller's good
            # inputs are never sent apart from its bad ones (blocker, 7, 3, 4, 2, 1, 1, 2).
            assert ["ok-1"] not in batches and ["ok-2"] not in batches
            assert len(batches) <= 8, [len(b) for b in batches]

            # 1024 inputs, every other one bad: 32 batches would be a valid request's count.
            batches.clear()
            status, body = await embed([bad if i % 2 else "w" for i in range(1024)])
            assert status == 413 and b"input too long" in body
            assert 1 <= len(batches) <= 32, len(batches)


@pytest.mark.parametrize(
    "url",
    [
        "http://u:s3cret@[::1",
        "http://127.0.0.1:99999",
        "http://",
        "http://:80/x",
        "http://127.0.0.1:9/?api_key=s3cret",
    ],
)
def test_an_unusable_upstream_url_is_one_line_and_exit_2(url: str) -> None:
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "embedding_proxy.cli",
            "serve",
            "--port",
            str(free_port()),
            "--upstream",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedding-proxy: config error: upstream")
    assert "s3cret" not in done.stderr


async def test_head_of_the_proxys_own_routes_is_answered_by_the_proxy(
    start_proxy: Starter,
) -> None:
    def script(request: Received) -> Reply:
        if request.method == "HEAD":  # as GET, without the body
            reply, close = tei_like(request)
            return reply.partition(b"\r\n\r\n")[0] + b"\r\n\r\n", close
        return tei_like(request)

    async with scripted(script) as upstream:
        proxy = start_proxy(upstream.url)
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, proxy.url)
            for path in ("/health", "/ready", "/metrics", "/v1/models"):
                async with s.get(proxy.url + path) as got:
                    assert got.status == 200
                async with s.head(proxy.url + path) as head:
                    assert head.status == 200, path
                    assert head.headers.get("Content-Type") == got.headers.get("Content-Type")
                    assert await head.read() == b""
            async with s.head(f"{proxy.url}/info") as head:  # TEI's route: forwarded
                assert head.status == 200
        methods = {(r.method, r.target) for r in upstream.received}
        assert ("HEAD", "/info") in methods
        assert not {t for m, t in methods if m == "HEAD"} & {"/health", "/ready", "/metrics"}


async def test_header_bytes_beyond_ascii_are_not_rewritten(start_proxy: Starter) -> None:
    async with scripted() as upstream:
        proxy = start_proxy(upstream.url)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"X-Name: \xc3\xa9\xff\r\nX-Plain: caf\r\n\r\n"
        )
        async with asyncio.timeout(30):
            data = await reader.read(-1)
        writer.close()
        assert data.startswith(b"HTTP/1.1 200")
        got = upstream.requests_to("/info")[-1]
        assert got.header("x-plain") == ["caf"]
        assert got.header("x-name") == []  # dropped, never garbled
