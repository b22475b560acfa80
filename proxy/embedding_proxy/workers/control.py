"""The private line between the workers and their supervisor: unix sockets. On Linux in the
abstract namespace (a name, no file: the sidecar's root filesystem is read-only), each named with
64 random bits of its own, a worker's new at every start; elsewhere in a directory only this user
may enter. Either way they carry only what `/metrics` and `/ready` tell anyone: the figures and
the readiness of each worker.

An abstract name is listed in /proc/net/unix for every process of the pod to see and take, so on
Linux both ends check who is at the other (SO_PEERCRED): the same user, and the one process
expected there (the supervisor, or the worker it started). A stranger that binds a dead worker's
name, or connects to a live one, is answered nothing and believed in nothing.

One command a connection: the asker writes a line, the server writes its answer and closes. Every
wait is bounded, so a stuck peer costs the asker its timeout, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_COMMAND = 64  # bytes in a command line
MAX_ANSWER = 64 << 20  # bytes in an answer (metrics of many label sets)
COMMAND_SECONDS = 2.0  # for the asker to send its line
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid

Answer = Callable[[str], Awaitable[bytes]]
Allowed = Callable[[int], bool]  # whether a peer's pid may talk to us


def peer_is(sock: socket.socket | None, allowed: Allowed) -> bool:
    """Whether the process at the other end of `sock` runs as this user and is `allowed`.
    Without SO_PEERCRED (not Linux) the sockets live in a directory of mode 0700: True."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    if sock is None:
        return False
    try:
        pid, uid, _ = _CREDENTIALS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, option, _CREDENTIALS.size)
        )
    except OSError:
        return False
    return uid == os.getuid() and pid > 0 and allowed(pid)


async def listen(path: str, answer: Answer, allowed: Allowed) -> asyncio.AbstractServer:
    """Answer the commands of the peers `allowed` on `path`; others get nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not peer_is(writer.get_extra_info("socket"), allowed):
                log.debug("control: a process that is not ours connected; not answered")
                return
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


def directory() -> str | None:
    """Where the sockets' files go: None on Linux (abstract names), else a new directory."""
    if sys.platform == "linux":
        return None
    return tempfile.mkdtemp(prefix="embedding-proxy-")  # mode 0700


def address(name: str, where: str | None) -> str:
    """A new address for `name`, with 64 random bits of its own: nobody can bind it beforehand."""
    unique = f"embedding-proxy-{secrets.token_hex(8)}-{name}"
    return "\0" + unique if where is None else os.path.join(where, unique)


async def ask(path: str, command: str, timeout: float, pid: int) -> bytes:
    """The answer to `command` from process `pid` at `path`; OSError (another process is
    there), TimeoutError or ValueError (too long) if none came."""
    return await asyncio.wait_for(_ask(path, command, pid), timeout)


async def _ask(path: str, command: str, pid: int) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, path)
        if not peer_is(sock, lambda found: found == pid):
            raise ConnectionRefusedError(f"control: not process {pid} at the socket")
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
