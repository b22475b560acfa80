"""The private line between the workers and their supervisor: unix sockets. On Linux in the
abstract namespace (a name, no file: the sidecar's root filesystem is read-only), named with 64
random bits a pod; elsewhere in a directory only this user may enter. Either way they carry only
what `/metrics` and `/ready` tell anyone: the figures and the readiness of each worker.

One command a connection: the asker writes a line, the server writes its answer and closes. Every
wait is bounded, so a stuck peer costs the asker its timeout, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_COMMAND = 64  # bytes in a command line
MAX_ANSWER = 64 << 20  # bytes in an answer (metrics of many label sets)
COMMAND_SECONDS = 2.0  # for the asker to send its line

Answer = Callable[[str], Awaitable[bytes]]


async def listen(path: str, answer: Answer) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), COMMAND_SECONDS)
            if line.endswith(b"\n") and len(line) <= MAX_COMMAND:
                writer.write(await answer(line.decode(errors="replace").strip()))
                await writer.drain()
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            pass
        except Exception:  # pragma: no cover - a bug in an answer must not end the server
            log.exception("control: answering failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)  # by hand: uvloop's own refuses abstract names
    except OSError:
        sock.close()
        raise
    return await asyncio.start_unix_server(handle, sock=sock, limit=MAX_COMMAND * 2)


def addresses(names: list[str]) -> tuple[list[str], str | None]:
    """Socket addresses for `names`, and the directory that holds them (None: abstract)."""
    if sys.platform == "linux":
        prefix = f"\0embedding-proxy-{secrets.token_hex(8)}-"
        return [prefix + n for n in names], None
    directory = tempfile.mkdtemp(prefix="embedding-proxy-")  # mode 0700
    return [os.path.join(directory, n) for n in names], directory


async def ask(path: str, command: str, timeout: float) -> bytes:
    """The answer to `command`; OSError, TimeoutError or ValueError (too long) if none came."""
    return await asyncio.wait_for(_ask(path, command), timeout)


async def _ask(path: str, command: str) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        data = await reader.read(MAX_ANSWER + 1)
        chunks = [data]
        size = len(data)
        while data:
            data = await reader.read(MAX_ANSWER + 1 - size)
            chunks.append(data)
            size += len(data)
            if size > MAX_ANSWER:
                raise ValueError(f"control answer over {MAX_ANSWER} bytes")
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
