"""The supervisor's private line to its workers, attacked from another process of the pod (here:
the test's), and a worker restarted after it served a while: real processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request

import psutil
import pytest
from tests.helpers.processes import Process, Starter

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="abstract unix sockets")


def names(proxy: Process) -> set[str]:
    """The abstract socket names the proxy's processes listen on (listed in /proc/net/unix for
    every process of the pod to see)."""
    supervisor = psutil.Process(proxy.proc.pid)
    return {
        "\0" + c.laddr[1:]
        for p in (supervisor, *supervisor.children())
        for c in p.net_connections("unix")
        if c.laddr.startswith("@embedding-proxy-")
    }


def ready(proxy: Process) -> bool:
    try:
        with urllib.request.urlopen(proxy.url + "/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


async def until(condition, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.05)


def ask(name: str, command: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(name)
        chunks = []
        try:  # closed on us at once, or answered
            sock.sendall(command + b"\n")
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return b"".join(chunks)


async def test_a_dead_workers_socket_name_taken_by_another_process_fools_nobody(
    start_proxy: Starter, simulator: Process
) -> None:
    """Before: a process that bound a dead worker's name made its restarts die ("Address already
    in use") and, answering for it, turned /ready 200 and put its figures in /metrics."""
    proxy = start_proxy(simulator.url, "--workers", "2", ready_path="/ready")
    await until(lambda: "worker processes serving" in proxy.output(), "the pod never started")
    before = names(proxy)
    assert len(before) == 3  # the supervisor's and two workers'
    # A stranger is answered nothing, by the supervisor and by a worker.
    for name in before:
        assert ask(name, b"metrics") == b"" and ask(name, b"state") == b""

    victim = psutil.Process(proxy.proc.pid).children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    end = time.monotonic() + 10
    while True:  # take the dead worker's name as soon as it is free
        taken = next((n for n in before if _bind(squatter, n)), None)
        if taken is not None:
            break
        assert time.monotonic() < end, "the dead worker's name never came free"
        await asyncio.sleep(0.001)
    squatter.listen(16)
    squatter.setblocking(False)
    asked = 0
    await until(lambda: ready(proxy) and len(psutil.Process(proxy.proc.pid).children()) == 2, "")
    for _ in range(20):  # whoever connects is told the worker serves
        try:
            conn, _ = squatter.accept()
        except BlockingIOError:
            break
        asked += 1
        conn.close()
    squatter.close()
    assert asked == 0  # the restarted worker has a name of its own
    assert "Address already in use" not in proxy.output()
    assert taken not in names(proxy)


def _bind(sock: socket.socket, name: str) -> bool:
    try:
        sock.bind(name)
    except OSError:
        return False
    return True


async def test_a_worker_that_served_a_while_is_restarted_at_once(
    start_proxy: Starter, simulator: Process
) -> None:
    """The restart back-off doubles while a worker dies young; one that served a while starts
    it over (before: only one that had lived 60 s, so the pod stayed unready up to 30 s)."""
    proxy = start_proxy(simulator.url, "--workers", "2", ready_path="/ready")
    await until(lambda: "worker processes serving" in proxy.output(), "the pod never started")

    def workers() -> set[int]:
        return {p.pid for p in psutil.Process(proxy.proc.pid).children()}

    victim = min(workers())  # one worker, killed again and again: its slot's back-off grows
    for _ in range(3):  # young deaths: 0.5, 1, 2 s
        known = workers()
        os.kill(victim, signal.SIGKILL)
        await until(lambda known=known: len(workers() - known) == 1, "not restarted", 60)
        victim = next(iter(workers() - known))
        await until(lambda: ready(proxy), "not ready", 60)
    await asyncio.sleep(5.5)  # served a while (STABLE_SECONDS)
    os.kill(victim, signal.SIGKILL)
    await until(lambda: proxy.output().count("restarting it in") == 4, "no fourth restart", 10)
    delays = [
        line.rsplit(" in ", 1)[1]
        for line in proxy.output().splitlines()
        if "restarting it in" in line
    ]
    assert delays == ["0.5 s", "1.0 s", "2.0 s", "0.5 s"], delays
