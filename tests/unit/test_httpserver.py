"""The HTTP/1.1 server, spoken to byte by byte over loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from embedding_proxy.httpserver import Request, Response, Server

LIMIT = 1000


class Echo:
    """A handler that answers with what it saw, and can be told to wait."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.release = asyncio.Event()
        self.release.set()
        self.cancelled = 0

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("boom")
        if request.path == "/wait":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if request.oversize:
            return Response(413, b"too big", "text/plain")
        body = f"{request.method} {request.path_qs} {len(request.body)}".encode()
        return Response(200, body, "text/plain", {"X-Seen": request.headers.get("x-tag", "-")})


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Echo]]:
    echo = Echo()
    server = Server(echo, LIMIT, keepalive_seconds=0.5)
    await server.start("127.0.0.1", 0)
    yield server, echo
    await server.close(timeout=1)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def post(path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


async def test_pipelined_requests_are_answered_in_order(served: tuple[Server, Echo]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"".join(post(f"/r{i}?q={i}", b"x" * i) for i in range(5)))
    for i in range(5):
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, f"POST /r{i}?q={i} {i}".encode())
        assert "date" in headers and "connection" not in headers
    writer.close()


async def test_headers_are_case_insensitive_and_passed_on(served: tuple[Server, Echo]) -> None:
    server, echo = served
    reader, writer = await connect(server)
    writer.write(
        post("/h", b"{}", "X-Tag: one\r\nx-tag: two\r\nContent-Type: Application/JSON\r\n")
    )
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["x-seen"] == "one, two"
    assert echo.seen[0].content_type == "application/json"
    writer.close()


async def test_chunked_body_and_expect_continue(served: tuple[Server, Echo]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"POST /c 7")
    writer.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_body_is_refused_and_the_connection_goes_on(
    served: tuple[Server, Echo], chunked: bool
) -> None:
    server, echo = served
    reader, writer = await connect(server)
    big = b"y" * (LIMIT + 1)
    if chunked:
        writer.write(
            b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(big)
            + big
            + b"\r\n0\r\n\r\n"
        )
    else:
        writer.write(post("/big", big))
    status, _, body = await read_response(reader)
    assert (status, body) == (413, b"too big")
    assert echo.seen[-1].body == b""  # never held in memory
    writer.write(post("/after", b"ok"))
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"POST /after 2")
    writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"z" * 70_000 + b"\r\n\r\n", 431),
    ],
)
async def test_malformed_requests_get_a_plain_error_and_a_close(
    served: tuple[Server, Echo], raw: bytes, status: int
) -> None:
    server, echo = served
    reader, writer = await connect(server)
    writer.write(raw)
    got, headers, _ = await read_response(reader)
    assert got == status and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
    assert echo.seen == []
    writer.close()


async def test_http10_and_connection_close_end_the_connection(served: tuple[Server, Echo]) -> None:
    server, _ = served
    for request in (
        b"GET /a HTTP/1.0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        reader, writer = await connect(server)
        writer.write(request)
        status, headers, body = await read_response(reader)
        assert (status, body, headers["connection"]) == (200, b"GET /a 0", "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_head_gets_headers_only(served: tuple[Server, Echo]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 9" in head  # of "HEAD /h 0"
    status, _, body = await read_response(reader)  # the next answer follows at once
    assert (status, body) == (200, b"GET /g 0")
    writer.close()


async def test_a_handler_error_is_a_500_and_the_server_goes_on(
    served: tuple[Server, Echo],
) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(post("/boom") + post("/fine"))
    status, _, body = await read_response(reader)
    assert status == 500 and b"internal error" in body
    status, _, _ = await read_response(reader)
    assert status == 200
    writer.close()


async def test_a_client_that_leaves_cancels_its_handler(served: tuple[Server, Echo]) -> None:
    server, echo = served
    echo.release.clear()
    _, writer = await connect(server)
    writer.write(post("/wait"))
    await asyncio.sleep(0.1)
    writer.close()
    for _ in range(50):
        if echo.cancelled:
            break
        await asyncio.sleep(0.02)
    assert echo.cancelled == 1


async def test_idle_connections_are_closed(served: tuple[Server, Echo]) -> None:
    server, _ = served
    reader, writer = await connect(server)
    writer.write(post("/x"))
    await read_response(reader)
    # keepalive_seconds is 0.5; the sweep runs at that interval.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_close_lets_answers_in_progress_finish() -> None:
    echo = Echo()
    echo.release.clear()
    server = Server(echo, LIMIT)
    await server.start("127.0.0.1", 0)
    port = server.port
    reader, writer = await connect(server)
    writer.write(post("/wait"))
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(server.close(timeout=5))
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer listening
    echo.release.set()
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close"
    await closing
    writer.close()
