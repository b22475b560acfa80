"""The HTTP/1.1 server, spoken to byte by byte over loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from tests.helpers.rawhttp import read_answer

from embedding_proxy.http import reader as httpreader
from embedding_proxy.http.connection import Connection
from embedding_proxy.http.message import Limits, Request, Response
from embedding_proxy.http.server import Server

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
    server = Server(echo, Limits(max_body_bytes=LIMIT, keepalive_timeout=0.5))
    await server.start("127.0.0.1", 0)
    yield server, echo
    await server.close(timeout=1)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    return await read_answer(reader, 5)


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


async def test_expect_continue_is_ignored_from_an_http10_client(
    served: tuple[Server, Echo],
) -> None:
    """RFC 9110 §10.1.1: a 1.0 client does not know 100 Continue, and sends its body anyway."""
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"POST /c HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    await poll(lambda: any(c.phase == httpreader._BODY for c in server.connections), "no head")
    writer.write(b"abc")
    status, _, body = await read_response(reader)  # the first status line is the answer
    assert (status, body) == (200, b"POST /c 3")
    assert await closed(reader)
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
    server = Server(echo, Limits(max_body_bytes=LIMIT))
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


# Issue 13, row by row.
async def conn_of(server: Server, before: set[Connection]) -> Connection:
    for _ in range(500):
        new = server.connections - before
        if new:
            return new.pop()
        await asyncio.sleep(0.01)
    raise AssertionError("no connection")


async def poll(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < end, what
        await asyncio.sleep(0.01)


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 10) == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET *@127.0.0.1:18099/steal HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # row 1
        (b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # row 10
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A:\r\n" * 101 + b"\r\n", 431),  # row 3
        (b"GET /info#@127.0.0.1:18099 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # a fragment
        (b"GET /../../steal HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # dot segments
        (b"GET /a/%2E%2e/steal HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /a/./b?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET //evil/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
async def test_refused_requests_never_reach_the_handler(
    served: tuple[Server, Echo], raw: bytes, status: int
) -> None:
    server, echo = served
    reader, writer = await connect(server)
    writer.write(raw)
    got, headers, _ = await read_response(reader)
    assert (got, headers["connection"]) == (status, "close")
    assert await closed(reader)
    assert echo.seen == []
    writer.close()


async def test_options_asterisk_is_answered_by_the_server(served: tuple[Server, Echo]) -> None:
    server, echo = served
    reader, writer = await connect(server)
    writer.write(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + post("/next"))
    status, headers, body = await read_response(reader)
    assert (status, body, headers["allow"]) == (200, b"", "GET, HEAD, POST, OPTIONS")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"POST /next 0")
    assert [r.path for r in echo.seen] == ["/next"]  # never forwarded, never handled
    writer.close()


async def test_a_pipeline_is_answered_up_to_the_malformed_request(
    served: tuple[Server, Echo],
) -> None:
    """Row 8: good, good, malformed: the first two are answered, then 400."""
    server, _ = served
    reader, writer = await connect(server)
    writer.write(post("/one") + post("/two") + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    answers = [await read_response(reader) for _ in range(3)]
    assert [(s, b) for s, _, b in answers[:2]] == [(200, b"POST /one 0"), (200, b"POST /two 0")]
    assert answers[2][0] == 400 and answers[2][1]["connection"] == "close"
    assert await closed(reader)
    writer.close()


async def test_expect_continue_over_the_limit_is_refused_and_closed(
    served: tuple[Server, Echo],
) -> None:
    """Row 9: the client may never send the body, so what follows cannot be framed."""
    server, echo = served
    reader, writer = await connect(server)
    writer.write(
        post("/big", b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 5000")
    )
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (413, b"too big", "close")
    writer.write(post("/swallowed?"))  # not taken as a body, nor as a request
    assert await closed(reader)
    assert [r.path for r in echo.seen] == ["/big"]
    writer.close()


async def test_continue_waits_for_the_answers_before_it(served: tuple[Server, Echo]) -> None:
    """Row 15: `100 Continue` only once the request's turn has come."""
    server, echo = served
    echo.release.clear()
    before = set(server.connections)
    reader, writer = await connect(server)
    writer.write(
        post("/wait")
        + b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    conn = await conn_of(server, before)
    await poll(lambda: conn.continue_due, "second head not read")
    echo.release.set()
    status, _, body = await read_response(reader)  # the first answer comes first ...
    assert (status, body) == (200, b"POST /wait 0")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # ... then the go-ahead
    writer.write(b"abc")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"POST /c 3")
    writer.close()


class Answers:
    """A handler that answers with the Response its path names."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: Request) -> Response:
        self.calls += 1
        return ANSWERS[request.path]


ANSWERS = {
    "/cookies": Response(200, b"c", "text/plain", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    "/dict": Response(200, b"d", None, {"X-One": "1", "Content-Length": "999"}),
    "/204": Response(204, b"ignored", "text/plain", {"X-A": "a"}),
    "/304": Response(304, b"", "text/plain", {"ETag": '"e"'}),
    "/not-latin-1": Response(200, b"x", None, {"X-Name": "caf\u00e9 \u2713"}),
    "/injection": Response(200, b"x", None, {"X": "a\r\nSet-Cookie: evil=1"}),
    "/bad-name": Response(200, b"x", None, [("Bad Name", "v")]),
    "/bad-status": Response(1000, b"x"),
    "/big": Response(200, b"b" * 1_000_000, "application/octet-stream"),
    "/ok": Response(200, b"ok", "text/plain"),
}


@pytest.fixture
async def answering() -> AsyncIterator[tuple[Server, Answers]]:
    handler = Answers()
    server = Server(handler, Limits(max_body_bytes=LIMIT))
    await server.start("127.0.0.1", 0)
    yield server, handler
    await server.close(timeout=1)


async def read_raw_head(reader: asyncio.StreamReader) -> list[str]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head.decode("latin-1").split("\r\n")[:-2]


async def test_repeated_headers_are_written_in_order(answering: tuple[Server, Answers]) -> None:
    """Row 14 (the server's half): a list of pairs carries repeated headers."""
    server, _ = answering
    reader, writer = await connect(server)
    writer.write(b"GET /cookies HTTP/1.1\r\nHost: x\r\n\r\nGET /dict HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = await read_raw_head(reader)
    assert [line for line in lines if line.startswith("Set-Cookie")] == [
        "Set-Cookie: a=1",
        "Set-Cookie: b=2",
    ]
    assert await reader.readexactly(1) == b"c"
    status, headers, body = await read_response(reader)
    assert (status, headers["x-one"], headers["content-length"], body) == (200, "1", "1", b"d")
    writer.close()


async def test_no_body_headers_on_204_and_304(answering: tuple[Server, Answers]) -> None:
    """Row 17: neither a body nor its length; the next answer follows at once."""
    server, _ = answering
    reader, writer = await connect(server)
    writer.write(
        b"".join(f"GET /{p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in ("204", "304", "ok"))
    )
    for status in ("204", "304"):
        lines = await read_raw_head(reader)
        assert lines[0].startswith(f"HTTP/1.1 {status} ")
        names = {line.partition(":")[0].lower() for line in lines[1:]}
        assert not names & {"content-length", "transfer-encoding", "content-type"}, lines
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"ok")
    writer.close()


@pytest.mark.parametrize("path", ["/not-latin-1", "/injection", "/bad-name", "/bad-status"])
async def test_an_answer_that_cannot_be_written_is_a_logged_500(
    answering: tuple[Server, Answers], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Row 4 (the server's half): never a hanging connection, never a header injected."""
    server, _ = answering
    reader, writer = await connect(server)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers, body = await read_response(reader)
    assert (status, headers["connection"]) == (500, "close") and b"internal error" in body
    assert "set-cookie" not in headers
    assert await closed(reader)
    assert f"cannot write the answer to GET {path}" in caplog.text
    writer.close()


async def test_a_client_that_does_not_read_stops_being_served(
    answering: tuple[Server, Answers],
) -> None:
    """Row 2: write flow control. A client pipelines requests for large answers and reads
    none: the server stops handling (and reading) its requests, and holds one answer."""
    server, handler = answering
    before = set(server.connections)
    reader, writer = await connect(server)
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
    conn = await conn_of(server, before)
    await poll(lambda: conn.write_paused and conn.task is None, "never paused")
    assert conn.held  # not reading either
    assert handler.calls < 200
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() <= 1_000_000 + 70_000  # one answer, about
    for _ in range(200):  # once it reads, every answer comes, in order
        status, _, body = await read_response(reader)
        assert (status, len(body)) == (200, 1_000_000)
    assert handler.calls == 200
    writer.close()


async def test_a_long_pipeline_is_read_as_it_is_answered(served: tuple[Server, Echo]) -> None:
    """Requests held for one connection are bounded, however many arrive in one read."""
    server, echo = served
    echo.release.clear()
    before = set(server.connections)
    reader, writer = await connect(server)
    request = b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * 3000)
    conn = await conn_of(server, before)
    await poll(lambda: conn.held, "never stopped reading")
    assert len(conn.pending) <= httpreader.MAX_PIPELINED + httpreader.FEED_SLICE // len(request)
    echo.release.set()
    for _ in range(3000):
        status, _, _ = await read_response(reader)
        assert status == 200
    writer.close()


async def test_an_endless_header_is_refused_before_it_ends(served: tuple[Server, Echo]) -> None:
    """Row 3: httptools holds a header until it ends; the server does not wait for that."""
    server, _ = served
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    answer = asyncio.ensure_future(read_response(reader))
    with contextlib.suppress(ConnectionError):
        for _ in range(1000):  # up to 1 MB, never a line end
            if answer.done():
                break
            writer.write(b"z" * 1024)
            await writer.drain()
    status, headers, _ = await answer
    assert (status, headers["connection"]) == (431, "close")
    writer.close()


async def test_an_endless_trailer_is_cut_off(served: tuple[Server, Echo]) -> None:
    """httptools holds a chunked body's trailer until it ends, as it does a header."""
    server, echo = served
    reader, writer = await connect(server)
    writer.write(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ")
    answer = asyncio.ensure_future(read_response(reader))
    with contextlib.suppress(ConnectionError):
        for _ in range(1000):  # up to 1 MB (the limit here allows 8 KB and a head)
            if answer.done():
                break
            writer.write(b"z" * 1024)
            await writer.drain()
    status, headers, _ = await answer
    assert (status, headers["connection"]) == (413, "close")
    assert echo.seen == []
    writer.close()


@pytest.fixture
async def strict() -> AsyncIterator[tuple[Server, Echo]]:
    echo = Echo()
    limits = Limits(max_body_bytes=LIMIT, head_timeout=0.3, body_timeout=0.3, max_connections=3)
    server = Server(echo, limits)
    await server.start("127.0.0.1", 0)
    yield server, echo
    await server.close(timeout=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ",  # a head that never ends
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # a body that never ends
    ],
)
async def test_slow_requests_time_out_with_408(strict: tuple[Server, Echo], raw: bytes) -> None:
    """Row 5: a head or body not complete in time gets 408 and a close."""
    server, echo = strict
    reader, writer = await connect(server)
    writer.write(raw)
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (408, "close")
    assert await closed(reader)
    assert echo.seen == []
    writer.close()


async def test_a_connection_that_asks_nothing_is_closed(strict: tuple[Server, Echo]) -> None:
    server, _ = strict
    reader, writer = await connect(server)
    assert await closed(reader)  # after head_timeout, without an answer
    writer.close()


async def test_connections_beyond_the_limit_get_503(strict: tuple[Server, Echo]) -> None:
    """Row 5: a cap on connections (max_connections=3 here), each with a request under way."""
    server, _ = strict
    held = [await connect(server) for _ in range(3)]
    for _, held_writer in held:  # in the middle of a body: never closed for a newcomer
        held_writer.write(b"POST /within HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    await poll(lambda: len(server.connections) == 3, "not connected")
    reader, writer = await connect(server)
    writer.write(post("/over", b"x" * 500).replace(b"Length: 500", b"Length: 900"))
    status, headers, body = await read_response(reader)  # at once: its body is not read
    assert (status, headers["connection"], body) == (503, "close", b"too many connections\n")
    assert await closed(reader)
    held_reader, held_writer = held[0]
    held_writer.write(b"defghij")
    status, _, _ = await read_response(held_reader)
    assert status == 200
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_at_the_limit_a_stalled_head_makes_room_and_probes_are_answered() -> None:
    """Peers that stall in a head (or send nothing) give way to a newcomer, the oldest first;
    and with every slot busy a probe is answered all the same."""
    limits = Limits(max_connections=3, probe_paths=frozenset({"/health"}))
    server = Server(Echo(), limits)
    await server.start("127.0.0.1", 0)
    stalled = [await connect(server) for _ in range(3)]
    stalled[1][1].write(b"GET /half HTTP/1.1\r\nHost: x\r\n")
    await poll(lambda: len(server.connections) == 3, "not connected")
    await asyncio.sleep(1.1)  # a stall, not a burst of new connections (STALLED_SECONDS)
    reader, writer = await connect(server)
    assert await closed(stalled[0][0])  # the oldest that asked nothing went
    writer.write(post("/newcomer"))
    status, _, _ = await read_response(reader)
    assert status == 200
    busy = []
    for _ in range(3):  # every slot now has a request under way
        r, w = await connect(server)
        w.write(b"POST /busy HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        busy.append((r, w))
    await poll(lambda: len(server.connections) == 3, "not settled")
    probe_reader, probe_writer = await connect(server)
    probe_writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(probe_reader)
    assert (status, headers["connection"]) == (200, "close")
    for _, w in [*stalled, *busy, (reader, writer), (probe_reader, probe_writer)]:
        w.close()
    await server.close(timeout=1)


async def test_draining_ends_each_connection_after_what_it_sent(
    served: tuple[Server, Echo],
) -> None:
    """Row 7: once draining, every request received is answered; the last answer on each
    connection says close, and nothing is cut between a request and its answer."""
    server, _ = served
    reader, writer = await connect(server)
    writer.write(post("/before"))
    status, headers, _ = await read_response(reader)
    assert (status, "connection" in headers) == (200, False)
    server.drain()
    writer.write(post("/a") + post("/b"))
    first, second = await read_response(reader), await read_response(reader)
    assert (first[0], "connection" in first[1]) == (200, False)  # /b was already received
    assert (second[0], second[1]["connection"]) == (200, "close")
    assert await closed(reader)
    writer.close()


async def test_close_answers_the_connections_waiting_in_the_backlog() -> None:
    """Row 7: connections the kernel accepted but the loop had not yet taken are answered,
    not reset, when the server stops listening."""
    echo = Echo()
    server = Server(echo, Limits(max_body_bytes=LIMIT))
    await server.start("127.0.0.1", 0)
    waiting = []
    for i in range(5):  # connected and sent while the loop runs nothing else
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(post(f"/queued{i}"))
        waiting.append(sock)
    assert not server.connections
    await server.close(timeout=5)  # takes the backlog before the loop could
    for i, sock in enumerate(waiting):
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(f"POST /queued{i} 0".encode())
        assert b"Connection: close" in data
        sock.close()


async def test_bodies_are_charged_as_they_arrive_and_never_wait_on_each_other() -> None:
    """Bodies held across all connections are bounded, charged by the bytes received (a head
    that declares a body and sends none holds nothing); past a full budget one body at a time
    may be read to its end, and one that then stalls gives its turn to the next; none is lost."""
    echo = Echo()
    server = Server(echo, Limits(max_body_bytes=LIMIT, max_body_buffer_bytes=1500))
    await server.start("127.0.0.1", 0)
    try:
        _, idle = await connect(server)  # declares 1,000 and 2 MB, sends nothing
        idle.write(post("/idle", b"x" * 1000)[:-1000])
        _, chunked = await connect(server)
        chunked.write(b"POST /idle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        first_reader, first = await connect(server)
        first.write(post("/a", b"x" * 1000)[:-400])  # 600 of 1,000 bytes
        await poll(lambda: server.body_held == 600, "first body not charged as received")
        second_reader, second = await connect(server)
        second.write(post("/b", b"y" * 1000))  # 1,600 > 1,500: read to its end all the same
        status, _, body = await read_response(second_reader)
        assert (status, body) == (200, b"POST /b 1000")
        await poll(lambda: server.body_held == 600, "second body not given back")
        third_reader, third = await connect(server)
        third.write(post("/c", b"z" * 1000)[:-100])  # 1,500: fits
        await poll(lambda: server.body_held == 1500, "third body not charged")
        stall_reader, stall = await connect(server)
        stall.write(post("/d", b"s" * 1000)[:-900])  # over: may finish, but stalls
        await poll(lambda: server.finisher is not None, "no body allowed past the budget")
        late_reader, late = await connect(server)
        late.write(post("/e", b"e" * 300)[:-200])  # over, and one is finishing: waits its turn
        await poll(lambda: len(server.waiting) == 1, "late body not waiting")
        late.write(b"e" * 200)  # not read meanwhile
        status, headers, _ = await read_response(stall_reader)  # after 2 s without a byte
        assert (status, headers["connection"]) == (408, "close")
        status, _, body = await read_response(late_reader)
        assert (status, body) == (200, b"POST /e 300")
        first.write(b"x" * 400)
        third.write(b"z" * 100)
        for reader, want in [(first_reader, b"/a 1000"), (third_reader, b"/c 1000")]:
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"POST " + want)
        await poll(lambda: server.body_held == 0, "budget not given back")
        assert [r.path for r in echo.seen] == ["/b", "/e", "/a", "/c"]
        # A body cut off in the middle gives its room back when its client leaves.
        first.write(post("/f", b"x" * 1000)[:-10])
        await poll(lambda: server.body_held == 990, "body not charged")
        (conn,) = [c for c in server.connections if c.body_parts]
        first.close()
        await poll(lambda: server.body_held == 0, "budget of a departed client not given back")
        # Its parts go with it, not when the cycle collector gets to the connection.
        assert conn.body_parts == [] and conn.transport is not None
        for w in (idle, chunked, second, third, stall, late):
            w.close()
    finally:
        await server.close(timeout=1)


async def test_a_vetted_head_is_answered_before_its_body_is_read() -> None:
    """A request refused on its head (a missing API key) is answered at once and its body is
    never read nor held; the connection then closes."""
    echo = Echo()

    def vet(request: Request) -> Response | None:
        if request.headers.get("authorization") == "Bearer k":
            return None
        return Response(401, b"no key", "text/plain")

    server = Server(echo, Limits(max_body_bytes=LIMIT), vet)
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await connect(server)
        writer.write(post("/embed", b"x" * 900)[:-900])  # the head alone
        status, headers, body = await read_response(reader)
        assert (status, headers["connection"], body) == (401, "close", b"no key")
        assert server.body_held == 0
        writer.write(b"x" * 900)  # what the client still sends is dropped
        assert await closed(reader)
        assert echo.seen == []
        writer.close()
        reader, writer = await connect(server)
        writer.write(post("/embed", b"x" * 900, "Authorization: Bearer k\r\n") + post("/h"))
        for want in (b"POST /embed 900", b"POST /h 0"):  # no body: not vetted
            status, _, body = await read_response(reader)
            assert (status, body) == (200, want)
        writer.close()
    finally:
        await server.close(timeout=1)


async def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    """Row 2: keep-alive connections idle between requests cannot hold every slot; the one idle
    longest is closed for a new one, and a connection in the middle of a request is not."""
    echo = Echo()
    server = Server(echo, Limits(max_body_bytes=LIMIT, max_connections=3))
    await server.start("127.0.0.1", 0)
    try:
        idle = []
        for i in range(2):
            reader, writer = await connect(server)
            writer.write(post(f"/idle{i}"))
            assert (await read_response(reader))[0] == 200
            idle.append((reader, writer))
        busy_reader, busy = await connect(server)
        busy.write(post("/busy", b"x" * 10)[:-5])  # in the middle of its body
        await poll(lambda: len(server.connections) == 3, "not connected")
        new = []
        for gone in idle:  # the connection idle longest goes first
            reader, writer = await connect(server)
            writer.write(post("/new"))
            assert (await read_response(reader))[0] == 200  # not 503
            assert await closed(gone[0])
            new.append((reader, writer))
        assert new[0][0].at_eof() is False
        busy.write(b"x" * 5)
        assert (await read_response(busy_reader))[:3:2] == (200, b"POST /busy 10")
        for _, writer in new:
            writer.close()
        await poll(lambda: len(server.connections) == 1, "not closed")
        # With none idle, a new connection still gets 503.
        echo.release.clear()
        others = [await connect(server) for _ in range(2)]
        for _, writer in others:
            writer.write(post("/wait"))
        await poll(lambda: sum(c.task is not None for c in server.connections) == 2, "waiting")
        busy.write(post("/wait"))
        await poll(lambda: sum(c.task is not None for c in server.connections) == 3, "waiting")
        reader, writer = await connect(server)
        writer.write(post("/over"))
        assert (await read_response(reader))[0] == 503
        echo.release.set()
        for _, w in [*others, (reader, writer), (busy_reader, busy)]:
            w.close()
    finally:
        await server.close(timeout=1)
