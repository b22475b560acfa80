"""The supervisor of `server.workers` > 1 worker processes: starts them, restarts one that dies,
passes the pod's signals on to every worker (SIGTERM/SIGINT drain and stop, SIGUSR1 drains,
SIGHUP reloads), and answers the workers' questions about the pod on its own socket: the pod's
metrics (podmetrics.py) and its readiness. It serves no client itself and is on no request's
path. With `server.workers` = 1 none of this runs: the proxy is one process, as it always was."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..config.settings import Config
from ..failure import cannot_listen
from ..telemetry.metrics import GAUGE_RULES, PREFIX
from . import control, podmetrics
from .worker import Spec

log = logging.getLogger("embedding_proxy")

SIBLING_SECONDS = 1.0  # a worker's answer to the supervisor; a stuck one is passed over
START_POLL_SECONDS = 0.05
RESTART_FIRST_SECONDS = 0.5  # a worker that dies is restarted after this ...
RESTART_MAX_SECONDS = 30.0  # ... doubling while it keeps dying, up to this
STABLE_SECONDS = 5.0  # a worker that served this long starts the doubling over


@dataclass
class Slot:
    index: int
    control: str
    proc: asyncio.subprocess.Process | None = None
    serving: bool = False
    served_at: float | None = None  # when its process began serving
    last: podmetrics.Snapshot | None = None  # its metrics when last asked (a stuck one's stay)


class Supervisor:
    def __init__(
        self, config: Config, workers: int, config_path: Path | None, flags: dict[str, Any]
    ) -> None:
        self.config = config
        self.workers = workers
        self.config_path = config_path
        self.flags = flags
        self.dir = control.directory()
        self.pod = control.address("pod", self.dir)
        self.slots = [Slot(i, "") for i in range(workers)]  # each start names its own socket
        self.retired: podmetrics.Snapshot = []  # counts of workers that exited
        self.restarts = 0
        self.up = False  # every worker has served once: from now on one that exits is restarted
        self.failed: int | None = None  # a worker's exit code when the pod could not start
        self.draining = False
        self.stopping = False
        self.stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        try:
            pod = await control.listen(self.pod, self._answer, self._is_worker)
        except OSError:
            self._remove_dir()
            raise
        handlers = {
            signal.SIGTERM: self._stop,
            signal.SIGINT: self._stop,
            signal.SIGUSR1: self._drain,
            signal.SIGHUP: self._reload,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        try:
            keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
            while not self.stopping and not all(s.serving for s in self.slots):
                await asyncio.sleep(START_POLL_SECONDS)
            if not self.stopping:
                self.up = True
                server = self.config.server
                log.info(
                    "embedding-proxy: %d worker processes serving on %s:%d",
                    self.workers,
                    server.host,
                    server.port,
                )
            await self.stop.wait()
            await asyncio.gather(*keepers)
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)
            pod.close()
            self._remove_dir()
        if self.failed is None:
            log.info("stopped")
        return self.failed or 0

    def _remove_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # Signals.
    def _stop(self, quiet: bool = False) -> None:
        if not self.stopping and not quiet:
            log.info("signal received: every worker drains and stops")
        self.stopping = True
        self.stop.set()
        self._signal(signal.SIGTERM, every=True)

    def _drain(self) -> None:
        log.info("drain asked: every worker drains")
        self.draining = True
        self._signal(signal.SIGUSR1)

    def _reload(self) -> None:
        if self.config_path is None:
            log.warning("SIGHUP: there is no config file to reload")
            return
        self._signal(signal.SIGHUP)

    def _signal(self, sig: int, every: bool = False) -> None:
        """To the serving workers, or, `every`, to all. One still starting would die of SIGUSR1
        or SIGHUP (no handler yet): it reads the config file as it starts, and is told of a
        drain once it serves."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None and (every or slot.serving):
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    # Workers.
    async def _keep(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_FIRST_SECONDS
        while not self.stopping:
            if self.dir is not None:  # the socket file the last worker left
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(slot.control)
            # A new name each start: whoever took the last one's (it is listed in
            # /proc/net/unix) neither stops this worker binding nor is taken for it.
            slot.control = control.address(f"worker-{slot.index}", self.dir)
            spec = Spec(
                slot.index,
                self.workers,
                slot.control,
                self.pod,
                os.getpid(),
                str(self.config_path) if self.config_path else None,
                self.flags,
            )
            # The spec on stdin, not in argv: a command line is there for every process to read.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "embedding_proxy.workers.worker",
                stdin=asyncio.subprocess.PIPE,
            )  # fmt: skip
            slot.proc = proc
            assert proc.stdin is not None
            proc.stdin.write(spec.encode().encode() + b"\n")
            with contextlib.suppress(OSError):
                await proc.stdin.drain()
            proc.stdin.close()
            slot.served_at = None
            watching = asyncio.create_task(self._watch_start(slot, proc))
            code = await proc.wait()
            watching.cancel()
            slot.serving = False
            self._retire(slot)
            if self.stopping:
                return
            if not self.up:  # the pod never started: stop it with this worker's code
                log.error("worker %d exited with %s while starting", slot.index, code)
                self.failed = code if code and code > 0 else 1
                self._stop(quiet=True)
                return
            self.restarts += 1
            # The back-off is for a worker that cannot start or dies at once; one that served a
            # while died of something else, and its pod is unready until it is back.
            if slot.served_at is not None and loop.time() - slot.served_at >= STABLE_SECONDS:
                delay = RESTART_FIRST_SECONDS
            log.error(
                "worker %d (pid %d) exited with %s; restarting it in %.1f s",
                slot.index,
                proc.pid,
                f"signal {-code}" if code < 0 else f"code {code}",
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            delay = min(delay * 2, RESTART_MAX_SECONDS)

    async def _watch_start(self, slot: Slot, proc: asyncio.subprocess.Process) -> None:
        """Mark the worker serving once it says so; a drain under way reaches it then."""
        while True:
            await asyncio.sleep(START_POLL_SECONDS)
            with contextlib.suppress(OSError, TimeoutError, ValueError, KeyError, TypeError):
                state = orjson.loads(
                    await control.ask(slot.control, "state", SIBLING_SECONDS, proc.pid)
                )
                if state["serving"]:
                    break
        slot.serving = True
        slot.served_at = asyncio.get_running_loop().time()
        if self.up:
            log.info("worker %d (pid %d) serving again", slot.index, proc.pid)
        if self.draining:
            proc.send_signal(signal.SIGUSR1)

    def _retire(self, slot: Slot) -> None:
        """A worker exited: its counts stay in the pod's (those since the last scrape are lost)."""
        if slot.last is not None:
            cumulative = podmetrics.cumulative(slot.last)
            self.retired = podmetrics.merge([self.retired, cumulative], GAUGE_RULES)
            slot.last = None

    # The pod, for the workers.
    async def _answer(self, command: str) -> bytes:
        if command == "metrics":
            return await self._metrics()
        if command == "ready":
            return orjson.dumps({"not_ready": await self._not_ready()})
        return b""

    async def _metrics(self) -> bytes:
        await asyncio.gather(*(self._fetch(s) for s in self.slots if s.serving))
        snaps = [s.last for s in self.slots if s.last is not None]
        merged = podmetrics.merge([*snaps, self.retired], GAUGE_RULES)
        serving = sum(s.serving for s in self.slots)
        own = [
            [
                PREFIX + "workers",
                "gauge",
                "Worker processes serving now (server.workers).",
                [[PREFIX + "workers", {}, serving]],
            ],
            [
                PREFIX + "worker_restarts",
                "counter",
                "Worker processes restarted after they exited.",
                [[PREFIX + "worker_restarts_total", {}, self.restarts]],
            ],
        ]
        return podmetrics.render(merged + own)

    async def _fetch(self, slot: Slot) -> None:
        proc = slot.proc
        try:
            if proc is None:
                return
            data = await control.ask(slot.control, "metrics", SIBLING_SECONDS, proc.pid)
            snap = podmetrics.decode(data)
        except (OSError, TimeoutError, ValueError, IndexError, TypeError):
            return  # stuck or gone: its last figures stand (or were retired)
        if slot.proc is proc and proc is not None and proc.returncode is None:
            slot.last = snap

    def _is_worker(self, pid: int) -> bool:
        """Whether `pid` is one of the worker processes started here (and still running)."""
        return any(s.proc is not None and s.proc.pid == pid for s in self.slots)

    async def _state(self, slot: Slot) -> bytes:
        proc = slot.proc
        if proc is None:
            raise OSError("not started")
        return await control.ask(slot.control, "state", SIBLING_SECONDS, proc.pid)

    async def _not_ready(self) -> str | None:
        """Ready: every worker serving and ready, none draining."""
        if self.draining or self.stopping:
            return "draining"
        for slot in self.slots:
            if not slot.serving:
                return f"worker {slot.index} is not serving"
        answers = await asyncio.gather(
            *(self._state(s) for s in self.slots),
            return_exceptions=True,
        )
        for slot, answer in zip(self.slots, answers, strict=True):
            if isinstance(answer, BaseException):
                return f"worker {slot.index} did not answer"
            reason = orjson.loads(answer).get("not_ready")
            if reason:
                return f"worker {slot.index}: {reason}"
        return None


def check_ports(config: Config) -> None:
    """Fail in one line, as one process would, when a port is taken: bound here without
    SO_REUSEPORT, so that also another proxy's workers on it count (they would share it)."""
    server = config.server
    ports = [(server.port, "--port")]
    if server.metrics_port is not None:
        ports.append((server.metrics_port, "--metrics-port"))
    for port, flag in ports:
        try:
            found = socket.getaddrinfo(
                server.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, address in found:
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    probe.bind(address)
        except OSError as e:
            raise cannot_listen(server.host, port, e, flag) from None


def supervise(config: Config, workers: int, config_path: Path | None, flags: dict[str, Any]) -> int:
    """Run `workers` worker processes until SIGTERM; the exit code."""
    from ..serve import run
    from .shares import oversubscribed

    check_ports(config)

    for limit in oversubscribed(config, workers):
        log.warning(
            "%s is below server.workers=%d: each worker gets 1, so the pod may use %d",
            limit,
            workers,
            workers,
        )
    codes: list[int] = []

    async def main() -> None:
        codes.append(await Supervisor(config, workers, config_path, flags).run())

    run(main)
    return codes[0] if codes else 1
