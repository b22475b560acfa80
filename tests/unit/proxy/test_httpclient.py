"""The upstream client against scripted servers on loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tests.helpers.processes import free_port

from embedding_proxy.http.client import AnswerError, Client, ClientError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Scripted:
    """A server that runs `script` for each connection and counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Script], Awaitable[tuple[Scripted, Client]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    clients: list[Client] = []

    async def start(script: Script) -> tuple[Scripted, Client]:
        scripted = Scripted(script)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        client = Client(f"http://127.0.0.1:{port}/prefix", max_connections=2)
        clients.append(client)
        return scripted, client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.close()


async def test_keep_alive_connections_are_reused(serve: Serve) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            scripted.requests.append(head)
            writer.write(answer(body[::-1], b"X-Compute-Tokens: 7\r\n"))

    scripted, client = await serve(echo)
    for text in (b"abc", b"defg", b"hi"):
        got = await client.post("/embed", text, {"Authorization": "Bearer k"}, 1.0)
        assert (got.status, got.body, got.headers["x-compute-tokens"]) == (200, text[::-1], "7")
    assert scripted.connections == 1
    first = scripted.requests[0]
    assert first.startswith(b"POST /prefix/embed HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in first and b"\r\nHost: 127.0.0.1:" in first


async def test_a_connection_the_server_closed_is_replaced(serve: Serve) -> None:
    async def one_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"ok"))
        await writer.drain()  # then close without saying so (a keep-alive timeout)

    scripted, client = await serve(one_and_close)
    assert (await client.post("/embed", b"1", {}, 1.0)).body == b"ok"
    await asyncio.sleep(0.05)
    assert (await client.post("/embed", b"2", {}, 1.0)).body == b"ok"
    assert scripted.connections == 2


async def test_chunked_answers_and_connection_close(serve: Serve) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
            b"Retry-After: 2\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await writer.drain()

    scripted, client = await serve(chunked)
    got = await client.post("/embed", b"x", {}, 1.0)
    assert (got.status, got.body, got.headers["retry-after"]) == (503, b"abcde", "2")
    await client.post("/embed", b"x", {}, 1.0)
    assert scripted.connections == 2  # "Connection: close" was honoured


@pytest.mark.parametrize(
    "reply",
    [b"this is not http\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short"],
)
async def test_broken_answers_are_client_errors(serve: Serve, reply: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    _, client = await serve(broken)
    with pytest.raises(ClientError):
        await client.post("/embed", b"x", {}, 1.0)


async def test_nothing_listening_is_a_client_error() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", max_connections=1)
    with pytest.raises(ClientError):
        await client.post("/embed", b"x", {}, 1.0)


async def test_a_cancelled_call_leaves_no_connection_behind(serve: Serve) -> None:
    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            if body == b"slow":
                await asyncio.sleep(0.3)
            writer.write(answer(body))

    scripted, client = await serve(slow_then_fast)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.post("/embed", b"slow", {}, 1.0)
    # The late answer to "slow" must not be taken for the answer to the next request.
    assert (await client.post("/embed", b"fast", {}, 1.0)).body == b"fast"
    assert scripted.connections == 2


async def test_calls_beyond_max_connections_wait(serve: Serve) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            await asyncio.sleep(0.1)
            writer.write(answer(body))

    scripted, client = await serve(slow)
    bodies = [str(i).encode() for i in range(6)]
    got = await asyncio.gather(*(client.post("/embed", b, {}, 1.0) for b in bodies))
    assert [g.body for g in got] == bodies
    assert scripted.connections == 2


async def test_an_answer_delimited_by_the_end_of_the_connection_is_read_to_the_end(
    serve: Serve,
) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        for part in (b"[[1.0,", b"2.0]]"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)

    scripted, client = await serve(until_close)
    for _ in range(2):
        got = await client.post("/embed", b"x", {}, 1.0)
        assert (got.status, got.body) == (200, b"[[1.0,2.0]]")
    assert scripted.connections == 2  # such a connection is never reused


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (answer(b"ok", b"".join(b"X-%d: v\r\n" % i for i in range(101))), "headers"),
        (answer(b"ok", b"X: v\r\n" * 101), "headers"),
        (answer(b"ok", b"X-Long: " + b"v" * 70_000 + b"\r\n"), "head"),
        (b"HTTP/1.1 200 OK\r\nX-Endless: " + b"v" * 200_000, "head"),
        (answer(b"x" * 2000), "max_answer_bytes"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n", "max_answer_bytes"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"100\r\n" + b"y" * 256 + b"\r\n") * 5
            + b"0\r\n\r\n",
            "max_answer_bytes",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 2000, "max_answer_bytes"),
    ],
)
async def test_answers_over_a_limit_are_refused(reply: bytes, words: str) -> None:
    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        await reader.read()  # keep the connection open: the limit, not EOF, must end the call

    scripted = Scripted(hostile)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    client = Client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", 1, max_body=1024)
    try:
        with pytest.raises(AnswerError) as refused:
            async with asyncio.timeout(4):
                await client.post("/embed", b"x", {}, 1.0)
        assert words in str(refused.value)
    finally:
        client.close()
        server.close()


async def test_answers_held_at_once_fit_the_budget_and_the_rest_wait() -> None:
    """Answer bodies are charged their Content-Length at their heads: one that does not fit
    is not read until an answer before it is handed over; none is lost, none hangs."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            head, _, rest = answer(body * 600).partition(b"\r\n\r\n")  # 600 times as much
            writer.write(head + b"\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # the body in a read of its own
            writer.write(rest)
            await writer.drain()

    server = await asyncio.start_server(Scripted(script).handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", max_connections=4, max_held=1000)
    try:
        first = asyncio.create_task(client.post("/a", b"x", {}, 1.0))  # 600 bytes
        second = asyncio.create_task(client.post("/b", b"y", {}, 1.0))  # 600: over 1,000
        answers = await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert [a.body for a in answers] == [b"x" * 600, b"y" * 600]
        assert client.budget.held == 0 and not client.budget.waiting
        # While the first is held (its post not returned), the second's body is not read.
        held = client.budget
        held.held = 900  # as if an answer of 900 bytes were being read
        third = asyncio.create_task(client.post("/c", b"z", {}, 1.0))
        await asyncio.sleep(0.2)
        assert not third.done() and len(held.waiting) == 1
        held.give_back(900)
        assert (await asyncio.wait_for(third, 5)).body == b"z" * 600
        assert held.held == 0
    finally:
        client.close()
        server.close()
