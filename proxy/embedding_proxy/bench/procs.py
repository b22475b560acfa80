"""The processes a benchmark starts (simulator, proxy, load generator), and what it measures."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson
import psutil

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile_limit() -> int:
    """Soft file-descriptor limit up to the hard one: thousands of connections need as many fds.
    Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return orjson.loads(resp.read())


def concurrency_limit(proxy_url: str) -> int | None:
    """The proxy's `embedding_proxy_upstream_concurrency_limit` now, from its /metrics (None when
    it serves them elsewhere or has no such gauge)."""
    try:
        with urllib.request.urlopen(proxy_url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("embedding_proxy_upstream_concurrency_limit "):
            return int(float(line.split()[1]))
    return None


class ServiceFailed(RuntimeError):
    """A started server exited before it answered; `reason` is the last line it wrote."""

    def __init__(self, name: str, code: int, log_tail: str) -> None:
        lines = [line for line in log_tail.splitlines() if line.strip()]
        self.reason = lines[-1].strip() if lines else f"it exited with {code}"
        super().__init__(f"{name} exited with {code}:\n{log_tail}")


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself (or, with worker processes, one of its children) has a
    listening socket on `port`: what answers on the port may be another program that had it
    first."""
    try:
        conns = [c for p in _family(pid) for c in p.net_connections(kind="tcp")]
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _family(pid: int) -> list[psutil.Process]:
    """The process and its children: a proxy with worker processes is all of them."""
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def local_pid(url: str) -> int | None:
    """The process on this machine that listens on `url`'s port, if it is a loopback URL and
    that process may be inspected."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr.port == parts.port and c.pid:
            return int(c.pid)
    return None


def supervisor_of(pid: int | None) -> int | None:
    """A running proxy's own process: with worker processes, the supervisor of the worker that
    listens (its CPU and its workers' are then all counted)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        parent = proc.parent()
        if parent is not None and "embedding_proxy.workers.worker" in " ".join(proc.cmdline()):
            return parent.pid
    except psutil.Error:
        pass
    return pid


@dataclass
class Service:
    """A started server process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ServiceFailed(self.name, self.proc.returncode, self.log_tail())
            try:
                with urllib.request.urlopen(self.url + path, timeout=1) as resp:
                    if resp.status == 200 and listens(self.proc.pid, self.port):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer {path} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it and remove its log (errors that matter quote the log's tail first)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.unlink(missing_ok=True)


def start_service(
    name: str, args: list[str], port: int, ready_path: str, timeout: float = 30.0
) -> Service:
    log = Path(tempfile.mkstemp(prefix=f"embedding-proxy-bench-{name}-", suffix=".log")[1])
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    service = Service(name, proc, port, log)
    try:
        service.wait_ready(ready_path, timeout)
    except BaseException:
        service.stop()
        raise
    return service


def start_simulator(extra: list[str]) -> Service:
    port = free_port()
    args = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
    return start_service("simulator", [*args, *extra], port, "/health")


def start_proxy(upstream: str, extra: list[str]) -> Service:
    port = free_port()
    args = [PYTHON, "-m", "embedding_proxy.cli", "serve", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--upstream", upstream, "--log-level", "warning"]
    args += ["--workers", "1"]  # one process, as every table was measured; `extra` may differ
    return start_service("proxy", [*args, *extra], port, "/ready")


@dataclass
class Watch:
    """CPU seconds (user + system) between start() and stop(), and peak RSS sampled every 50 ms,
    of a process and its children (a proxy's worker processes)."""

    pid: int
    interval: float = 0.05
    cpu_s: float = 0.0
    peak_rss: int = 0
    switches: int = 0
    _switches0: int = 0
    _cpu0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _cpu(self) -> float:
        """The process's CPU and its children's (worker processes), alive ones."""
        total = 0.0
        for proc in _family(self.pid):
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def _switches(self) -> int:
        """Context switches so far (a process woken for fewer events switches more a request)."""
        total = 0
        for proc in _family(self.pid):
            with contextlib.suppress(psutil.Error):
                total += sum(proc.num_ctx_switches())
        return total

    def _rss(self) -> int:
        return sum(p.memory_info().rss for p in _family(self.pid))

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self._rss())
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._switches0 = self._switches()
        self._cpu0 = self._cpu()
        self.peak_rss = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.cpu_s = self._cpu() - self._cpu0
        self.switches = self._switches() - self._switches0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class LoadProcess:
    """The load generator child: spec in, "warm" out, "go" in, result out."""

    def __init__(self, spec: dict[str, Any], module: str = "embedding_proxy.bench.load") -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._send(spec)

    def _send(self, obj: dict[str, Any]) -> None:
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(orjson.dumps(obj) + b"\n")
        stdin.flush()

    def _receive(self) -> dict[str, Any]:
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"load generator exited with {self.proc.returncode}")
        return orjson.loads(line)

    def wait_warm(self) -> None:
        self._receive()

    def go(self) -> dict[str, Any]:
        self._send({"go": True})
        result = self._receive()
        self.proc.wait(30)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
