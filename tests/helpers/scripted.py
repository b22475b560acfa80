"""A scripted HTTP peer on loopback, run in the test process: it answers a proxy process with
exactly the bytes a test gives it (hostile ones included) and records what it received."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]  # as sent, names as written
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


# (the request) -> (raw answer bytes, close the connection after writing them), or a coroutine
# that returns them (to answer late).
Reply = tuple[bytes, bool]
Script = Callable[[Received], Reply | Awaitable[Reply]]


def answer(
    status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> bytes:
    """A well-framed answer, Content-Length included."""
    head = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}"]
    head += [f"{n}: {v}" for n, v in headers or []]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


INFO = orjson.dumps(
    {
        "model_id": "scripted",
        "max_client_batch_size": 32,
        "max_batch_tokens": 16384,
        "max_concurrent_requests": 512,
        "max_input_length": 512,
    }
)


def tei_like(request: Received) -> tuple[bytes, bool]:
    """/info, /health, and POST /embed with one small vector per input."""
    if request.target == "/info":
        return answer(200, INFO, [("Content-Type", "application/json")]), False
    if request.method == "POST":
        inputs = orjson.loads(request.body)["inputs"]
        vectors = orjson.dumps([[float(len(text)), 1.0] for text in inputs])
        return answer(200, vectors, [("Content-Type", "application/json")]), False
    return answer(200, b"ok"), False


class Scripted:
    """Answers each request with `script(request)`; `received` holds every request."""

    def __init__(self, script: Script = tei_like) -> None:
        self.script = script
        self.received: list[Received] = []
        self.connections = 0
        self.port = 0
        self.open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, prefix: str) -> list[Received]:
        return [r for r in self.received if r.target.startswith(prefix)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
                request = Received(method, target, headers, b"")  # type: ignore[arg-type]
                length = request.header("content-length")
                request.body = await reader.readexactly(int(length[0])) if length else b""
                self.received.append(request)
                result = self.script(request)
                reply, close = await result if inspect.isawaitable(result) else result
                writer.write(reply)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()


@asynccontextmanager
async def scripted(script: Script = tei_like) -> AsyncIterator[Scripted]:
    peer = Scripted(script)
    server = await asyncio.start_server(peer._serve, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        for writer in list(peer.open):
            writer.close()  # its handler then ends at its next read
        await asyncio.sleep(0)
