"""Real processes on loopback for integration tests: start, wait until they answer, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Start-up on a slow, busy machine (imports alone take seconds there); a process that dies
# fails at once, so a passing test never waits this out.
START_TIMEOUT = 60.0


def wait_http(
    url: str, timeout: float = START_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until `url` answers 200 (or the process dies, or time runs out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            # Each try may wait a while for a process the machine is slow to schedule.
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Process:
    """A started process, its port, and its output in a log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


Starter = Callable[..., Process]


def start_process(
    args: Sequence[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/health",
    timeout: float = START_TIMEOUT,
) -> Process:
    """Start `args` (its output to `log`) and wait until it answers on `port`."""
    full_env = {**os.environ, **(env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(args), stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    process = Process(proc, port, log, list(args))
    try:
        wait_http(f"{process.url}{ready_path}", timeout, proc)
    except BaseException:
        process.stop()
        raise
    return process


@contextlib.contextmanager
def running(args: Sequence[str], port: int, log: Path, **kwargs: object) -> Iterator[Process]:
    process = start_process(args, port, log, **kwargs)  # type: ignore[arg-type]
    try:
        yield process
    finally:
        process.stop()


def simulator_args(port: int, *flags: str) -> list[str]:
    """The TEI simulator's command line on loopback."""
    args = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
    return [*args, *flags]


def proxy_args(upstream: str, port: int, *extra: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "embedding_proxy.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--upstream",
        upstream,
        # One process, as the tests were written for; a later `--workers` in `extra` wins.
        "--workers",
        "1",
        *extra,
    ]
