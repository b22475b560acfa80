"""Differential conformance: the proxy's HTTP/1.1 server against h11, the reference.

Raw bytes (a fixed corpus: the framing attacks and the probes of issue 13; and generated
variants) go to the proxy's server on a real loopback socket, with a handler that records what it
was asked, and to h11. The server must refuse whatever h11 refuses, and take whatever h11 takes
with the same meaning: method, target, headers, body, and where the connection ends.

Where the server deliberately differs from h11, the difference is listed here (STRICTER,
LENIENT) with its reason; nothing else may differ.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.helpers.rawhttp import parse_head

from embedding_proxy.http import server as httpserver
from embedding_proxy.http.message import Limits, Request, Response
from embedding_proxy.http.server import Server

# Deliberate differences where the server refuses what h11 takes, each with its reason.
STRICTER = {
    "target": "a request target must be a path (origin-form), or `*` for OPTIONS: a target that "
    "names a host (absolute-form, authority-form, `*@host/...`) could make a forwarding proxy "
    "talk to another host (issue 13, row 1); h11 leaves the target to the application",
    "version": "only HTTP/1.0 and HTTP/1.1 are served (505); h11 takes any HTTP/d.d",
    "method": "only the registered methods, in upper case (llhttp's table); h11 takes any token",
    "control": "control characters in header values are refused (llhttp); h11 takes all but NUL, "
    "CR, LF, VT, FF",
    "length-and-chunked": "Content-Length with Transfer-Encoding: chunked is refused, the way "
    "requests are smuggled past a proxy that reads the other one (RFC 9112 §6.1 allows it); h11 "
    "reads the chunks",
    "chunk-size-overflow": "a chunk size beyond 64 bits is refused; h11 takes it and waits",
    "obs-fold": "RFC 9112 §5.2 lets a server refuse obsolete line folding; h11 unfolds it",
    "bare-lf": "lines must end in CRLF; h11 also takes a bare LF",
    "duplicate-length": "a repeated Content-Length is refused even when the values agree; h11 "
    "merges equal values (RFC 9112 §6.3 allows either)",
    "chunk-size-space": "whitespace after a chunk size is not in RFC 9112's grammar; h11 takes it",
    "upgrade-body": "no protocol upgrade is served; a request asking for one and carrying a body "
    "is refused (llhttp would not read its body), h11 reads it as a plain request",
    "connect": "CONNECT is refused: the proxy opens no tunnels",
    "path": "a fragment (origin-form has none, RFC 9112 §3.2.1), a `.` or `..` segment (raw or "
    "percent-encoded) or a path starting with `//` is refused: forwarded under the upstream's "
    "prefix, `/../x` or `//host/x` could reach another path or host; h11 leaves it to the "
    "application",
}
# ... and where it takes what h11 refuses.
LENIENT = {
    "empty-line": "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request "
    "line; llhttp skips them, h11 refuses them. An empty line carries no request, so framing is "
    "unchanged",
    "request-line-spaces": "RFC 9112 §3 lets a recipient split the request line on runs of spaces; "
    "llhttp does, h11 refuses them. Tabs and other whitespace are refused by both",
}

TIMEOUT = 10.0  # only a guard against a hang; no test waits for it to pass


@dataclass
class Seen:
    """A request as the application sees it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    version: str = field(default="", compare=False)  # known to the reference only


@dataclass
class Outcome:
    requests: list[Seen] = field(default_factory=list)
    end: str = "open"  # "open": waiting for more; "close": ended after the last; "refused"
    partial: Seen | None = field(default=None, compare=False)  # a head h11 took, body to come


def normal_headers(pairs: Iterator[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    # h11 reports these two normalised; the meaning is what must agree.
    if "transfer-encoding" in out:
        out["transfer-encoding"] = out["transfer-encoding"].lower()
    if "content-length" in out:
        out["content-length"] = str(int(out["content-length"].split(",")[0]))
    return out


def normal_target(target: str) -> str:
    """An empty query is not passed on: the meaning to a server is the same."""
    return target[:-1] if target.endswith("?") else target


def reference(data: bytes) -> Outcome:
    """What h11, as a server, makes of `data`, answering each request (with a 404, so that no
    answer accepts a protocol switch) before it reads the next."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out = Outcome()
    current: Seen | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            out.end = "refused"
            return out
        if event is h11.NEED_DATA:
            if conn.their_state is h11.SEND_BODY:
                out.partial = current
            return out
        if isinstance(event, h11.Request):
            current = Seen(
                event.method.decode("latin-1"),
                normal_target(event.target.decode("latin-1")),
                normal_headers(iter(event.headers)),
                b"",
                event.http_version.decode(),
            )
            if (current.method, current.target) == ("OPTIONS", "*"):
                current = Seen("OPTIONS", "*", {}, b"", current.version)
        elif isinstance(event, h11.Data):
            assert current is not None
            if current.target != "*":
                current.body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            out.requests.append(current)
            conn.send(h11.Response(status_code=404, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                out.end = "close"
                return out
            conn.start_next_cycle()


KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def differs(seen: Seen, difference: str) -> bool:
    """Whether a request h11 took is one the server refuses for `difference`."""
    if difference == "target":
        return not seen.target.startswith("/") and seen != ASTERISK
    if difference == "version":
        return seen.version not in ("1.0", "1.1")
    if difference == "method":
        return seen.method not in KNOWN_METHODS
    if difference == "path":
        path = seen.target.partition("?")[0]
        segments = path.lower().replace("%2e", ".").split("/")
        return "#" in seen.target or path.startswith("//") or bool({".", ".."} & set(segments))
    if difference == "connect":
        return seen.method == "CONNECT"
    if difference == "control":
        return any(_CONTROL.search(v) for v in seen.headers.values())
    if difference == "length-and-chunked":
        return "content-length" in seen.headers and "transfer-encoding" in seen.headers
    if difference == "upgrade-body":
        headers = seen.headers
        return (
            "upgrade" in headers.get("connection", "").lower()
            and "upgrade" in headers
            and (headers.get("content-length", "0") != "0" or "transfer-encoding" in headers)
        )
    raise AssertionError(difference)


# Differences in the bytes (folding, line ends, chunk sizes), not in what h11 reports: a corpus
# entry with one of these holds the offending request first.
IN_THE_BYTES = {
    "obs-fold",
    "bare-lf",
    "duplicate-length",
    "chunk-size-space",
    "chunk-size-overflow",
}


def expected(data: bytes, differences: set[str]) -> Outcome:
    """h11's outcome, but for the differences: the server refuses the first request that has
    one (the requests before it stand), and takes what LENIENT lists."""
    assert differences <= STRICTER.keys() | LENIENT.keys(), differences
    if "empty-line" in differences:
        data = re.sub(rb"(^|(?<=\r\n\r\n))(\r\n)+", b"", data)
    if "request-line-spaces" in differences:
        data = re.sub(rb"(?m)^([A-Z]+) +(\S+) +HTTP/", rb"\1 \2 HTTP/", data)
    if differences & IN_THE_BYTES:
        return Outcome(end="refused")
    ref = reference(data)
    for i, seen in enumerate(ref.requests):
        # These are rules of the server: they apply to every request, labelled or not (a
        # short body, say, leaves `ET / HTTP/1.1` for the next request line).
        if any(differs(seen, d) for d in STRICTER.keys() - IN_THE_BYTES):
            return Outcome(ref.requests[:i], "refused")
    if ref.partial and any(differs(ref.partial, d) for d in STRICTER.keys() - IN_THE_BYTES):
        return Outcome(ref.requests, "refused")  # refused on its head
    return ref


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                normal_headers(
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
                ),
                request.body,
            )
        )
        return Response(200, b"ok", "text/plain")


class Counting(httpserver.Connection):
    """The server's connection, counting the bytes it has been given."""

    received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        super().data_received(data)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Server, Recorder]]:
    monkeypatch.setattr(httpserver, "Connection", Counting)
    recorder = Recorder()
    http = Server(recorder, Limits(max_body_bytes=100_000))
    await http.start("127.0.0.1", 0)
    yield http, recorder
    await http.close(timeout=1)


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.005)


ASTERISK = Seen("OPTIONS", "*", {}, b"")  # answered by the server; no handler sees it


async def read_answers(
    reader: asyncio.StreamReader, seen: list[Seen], count: int | None
) -> list[tuple[int, dict[str, str], Seen | None]]:
    """`count` answers (all of them, to the close, if None), each with the request it answers:
    one the handler saw, the server's own answer to `OPTIONS *`, or None (a refusal)."""
    answers: list[tuple[int, dict[str, str], Seen | None]] = []
    handled = iter(seen)
    while count is None or len(answers) < count:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        except asyncio.IncompleteReadError as e:
            assert e.partial == b"", e.partial
            break
        status, headers = parse_head(head)
        request = ASTERISK if "allow" in headers else next(handled) if status == 200 else None
        if request is None or request.method != "HEAD":
            length = int(headers.get("content-length", 0))
            await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        answers.append((status, headers, request))
    return answers


async def proxy_outcome(server: Server, recorder: Recorder, data: bytes) -> Outcome:
    """Send `data`; once the server has read it all and finished (answered, or closed), read
    its answers and say what it did with the requests."""
    before = set(server.connections)
    start = len(recorder.seen)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await until(lambda: server.connections - before, "no connection")
        (conn,) = server.connections - before
        assert isinstance(conn, Counting)
        await until(lambda: conn.received == len(data) or conn.ended, "data not read")
        await until(lambda: conn.closing or (conn.task is None and not conn.pending), "busy")
        seen = recorder.seen[start:]
        answers = await read_answers(reader, seen, None if conn.closing else conn.served)
        out = Outcome([request for _, _, request in answers if request is not None])
        assert len(out.requests) == len(answers) or len(out.requests) == len(answers) - 1
        assert [status for status, _, _ in answers[: len(out.requests)]] == [200] * len(
            out.requests
        ), answers
        if len(answers) > len(out.requests):
            status, headers, _ = answers[-1]
            assert 400 <= status < 600 and headers.get("connection") == "close", answers
            out.end = "refused"
        elif conn.closing:
            assert answers and answers[-1][1].get("connection") == "close", answers
            out.end = "close"
        return out
    finally:
        writer.close()


# The corpus: raw requests, and where the server deliberately differs from h11.
GOOD = b"GET /good?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
CORPUS: list[tuple[bytes, str | None]] = [
    (GOOD, None),
    (GOOD + GOOD + b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", None),
    (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /info#@127.0.0.1:18099 HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /../../steal HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /a/./b HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /a/%2E%2e/b?x HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /a/. HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET //evil/x HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (GOOD + b"GET /%2e%2E/x HTTP/1.1\r\nHost: a\r\n\r\n", "path"),
    (b"GET /a..b/.c/d.?x=/../ HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET //a/b HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET / HTTP/1.0\r\n\r\n" + GOOD, None),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GOOD, None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GOOD, None),
    (b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n" + GOOD, None),
    (b"OPTIONS /o HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n" + GOOD, None),
    (b"GET / HTTP/1.1\r\nhOsT: a\r\nX-A:  spaced  value \t\r\nX-A: two\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\nY:\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n", None),
    # Row 10: Host.
    (b"GET / HTTP/1.1\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", None),
    (GOOD + b"GET / HTTP/1.1\r\nX: y\r\n\r\n" + GOOD, None),
    # Framing: Content-Length and Transfer-Encoding (row 10, and the attacks that held).
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n", None),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n",
        None,
    ),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        "length-and-chunked",
    ),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\na", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\na", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\na", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\nabcdefg", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" + GOOD, None),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;ext=1;q="x"\r\nabc\r\n01\r\nd\r\n0\r\nTrailer-X: t\r\n\r\n' + GOOD,
        None,
    ),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\na\r\n0\r\n\r\n", None),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", None),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffff\r\na\r\n0\r\n\r\n",
        "chunk-size-overflow",
    ),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", None),
    # Request line.
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "request-line-spaces"),
    (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", "request-line-spaces"),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", None),
    (b"GET /\r\nHost: a\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", None),
    (b"NOT HTTP AT ALL\r\n\r\n", None),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", None),  # TLS to a plain port
    # Row 8: good, good, malformed.
    (GOOD + GOOD + b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", None),
    # Upgrades: answered as plain HTTP/1.1, the next request read as such.
    (b"GET /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n" + GOOD, None),
    # Deliberate differences.
    (b"GET *@127.0.0.1:18099/steal HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (b"GET 169.254.169.254:80 HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (b"GET @evil/x HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (GOOD + b"POST http://evil/x HTTP/1.1\r\nHost: a\r\n\r\n", "target"),
    (b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: a\r\n\r\n", "connect"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
    (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", "version"),
    (b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", "method"),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", "method"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", "control"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", "control"),
    (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
    (b"GET / HTTP/1.1\nHost: a\n\n", "bare-lf"),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        "duplicate-length",
    ),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\na", "duplicate-length"),
    (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\na\r\n0\r\n\r\n",
        "chunk-size-space",
    ),
    (
        b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        "upgrade-body",
    ),
    (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "empty-line"),
    (GOOD + b"\r\n\r\n" + GOOD, "empty-line"),
]


@pytest.mark.parametrize(
    ("data", "difference"), CORPUS, ids=[f"{i}-{d or ''}" for i, (_, d) in enumerate(CORPUS)]
)
async def test_corpus_agrees_with_h11(
    server: tuple[Server, Recorder], data: bytes, difference: str | None
) -> None:
    http, recorder = server
    want = expected(data, {difference} if difference else set())
    assert await proxy_outcome(http, recorder, data) == want
    if difference:
        assert reference(data) != want  # the difference is real


def test_the_differences_are_all_exercised() -> None:
    used = {d for _, d in CORPUS if d}
    assert used == set(STRICTER) | set(LENIENT)


# Generated variants: a request built from parts, most valid, some with one fault.
TOKEN_CHARS = "!#$%&'*+-.^_`|~abcXYZ09"
VALUE_CHARS = st.sampled_from(["a", "Z", "0", " ", "\t", "/", ",", ";", "=", '"', "\x80", "\xff"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    difference: str | None = None
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
    target = draw(
        st.sampled_from(
            ["/", "/embed", "/a/b?c=d&e", "/a?b?c", "/%41", "/a..b/.c", "/x//y", "/~!$&'()*+,;=:@"]
        )
    )
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    headers: list[tuple[str, str]] = []
    if version == "1.1" or draw(st.booleans()):
        headers.append((draw(st.sampled_from(["Host", "host", "HOST"])), "example"))
    for _ in range(draw(st.integers(0, 3))):
        name = "X-" + draw(st.text(TOKEN_CHARS, min_size=1, max_size=6))
        value = draw(st.text(VALUE_CHARS, max_size=8))
        headers.append((name, value))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Close"]))))
    body = draw(st.binary(max_size=40))
    framing = draw(
        st.sampled_from(["length", "chunked", "none"] if not body else ["length", "chunked"])
    )
    chunks = b""
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        sizes = draw(st.lists(st.integers(1, 16), max_size=4))
        rest, parts = body, []
        for size in sizes:
            if rest:
                parts.append(b"%x\r\n%s\r\n" % (len(rest[:size]), rest[:size]))
                rest = rest[size:]
        if rest:
            parts.append(b"%x\r\n%s\r\n" % (len(rest), rest))
        chunks = b"".join(parts) + b"0\r\n\r\n"
    # One fault, sometimes.
    fault = draw(
        st.sampled_from(
            [None] * 6
            + ["no-host", "two-hosts", "te-list", "te-and-length", "bad-length", "two-lengths"]
            + ["bad-chunk", "short-body", "name-space", "target", "version", "control", "method"]
        )
    )
    if fault == "no-host":
        headers = [(n, v) for n, v in headers if n.lower() != "host"]
    elif fault == "two-hosts":
        headers += [("Host", "example"), ("Host", "other")]
    elif fault == "te-list" and framing == "chunked":
        headers[-1] = (
            "Transfer-Encoding",
            draw(st.sampled_from(["identity, chunked", "gzip, chunked", "chunked, chunked"])),
        )
    elif fault == "te-and-length" and framing == "chunked":
        headers.append(("Content-Length", str(len(chunks))))
        difference = "length-and-chunked"
    elif fault == "bad-length" and framing == "length":
        headers[-1] = ("Content-Length", draw(st.sampled_from(["+1", "-1", "1.0", "1 2", "x", ""])))
    elif fault == "two-lengths" and framing == "length":
        headers.append(("Content-Length", str(len(body) + 1)))
    elif fault == "bad-chunk" and framing == "chunked":
        chunks = chunks.replace(b"\r\n", draw(st.sampled_from([b"\r", b"\rx\n", b"g\r\n"])), 1)
    elif fault == "short-body" and framing == "length":
        body = body[:-1]
    elif fault == "name-space":
        headers.append(("X Y", "z"))
    elif fault == "target":
        target = draw(st.sampled_from(["http://169.254.169.254/", "a:80", "*", "*@h:1/x", "x/y"]))
        difference = "target"
    elif fault == "version":
        version = draw(st.sampled_from(["2.0", "0.9", "3.1"]))
        difference = "version"
    elif fault == "control":
        headers.append(("X-C", "a" + draw(st.sampled_from(["\x01", "\x1f", "\x7f"])) + "b"))
        difference = "control"
    elif fault == "method":
        method = draw(st.sampled_from(["get", "FOO", "M-SEARCH2"]))
        difference = "method"
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    data = head.encode("latin-1") + b"\r\n" + (chunks if framing == "chunked" else body)
    return data, difference


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pipeline=st.lists(requests(), min_size=1, max_size=3))
async def test_generated_requests_agree_with_h11(
    server: tuple[Server, Recorder], pipeline: list[tuple[bytes, str | None]]
) -> None:
    http, recorder = server
    data = b"".join(d for d, _ in pipeline)
    want = expected(data, {d for _, d in pipeline if d})
    assert await proxy_outcome(http, recorder, data) == want
