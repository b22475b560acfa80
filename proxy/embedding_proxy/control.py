"""The private line between the workers and their supervisor: unix sockets in a directory only
this user may enter (the supervisor makes it with mode 0700). One command a connection: the
asker writes a line, the server writes its answer and closes. Every wait is bounded, so a stuck
peer costs the asker its timeout, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

    return await asyncio.start_unix_server(handle, path, limit=MAX_COMMAND * 2)


async def ask(path: str, command: str, timeout: float) -> bytes:
    """The answer to `command`; OSError, TimeoutError or ValueError (too long) if none came."""
    return await asyncio.wait_for(_ask(path, command), timeout)


async def _ask(path: str, command: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
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
