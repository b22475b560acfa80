"""One of several worker processes (`server.workers` > 1), started by the supervisor.

A worker is the whole proxy on the shared ports (SO_REUSEPORT): it parses and answers the
connections the kernel hands it, with its own batcher, keeping to its share of the pod's limits
(shares.py). It answers its supervisor on a private socket (its metrics, its state), and asks the
supervisor for the pod's when it is scraped or probed, so `/metrics` and `/ready` speak for the
pod whichever worker answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from ..app import Proxy
from ..config import settings as config_module
from ..config.settings import Config
from ..failure import exit_code
from ..http.message import Request, Response
from ..telemetry import logs
from . import control, podmetrics
from .shares import worker_caps, worker_config

JSON = "application/json"
POD_SECONDS = 3.0  # for the supervisor's answer (it waits at most control.SIBLING_SECONDS)


@dataclass(frozen=True)
class Spec:
    """What the supervisor tells a worker it starts (as one line of JSON on its stdin)."""

    index: int
    workers: int
    control: str  # the worker's own socket
    pod: str  # the supervisor's
    parent: int
    config: str | None
    flags: dict[str, Any]

    def encode(self) -> str:
        return orjson.dumps(asdict(self)).decode()


_SCRAPE = Request("GET", "/metrics", "", {}, b"", None)


class WorkerProxy(Proxy):
    def __init__(self, config: Config, reload: Callable[[], Config] | None, spec: Spec) -> None:
        super().__init__(config, reload)
        self.spec = spec
        self.serving = False  # its ports are open and it has started
        self.housekeeping.caps_share = lambda caps: worker_caps(caps, spec.index, spec.workers)
        self._control: asyncio.AbstractServer | None = None

    async def start(self, config_path: Path | None = None) -> None:
        await super().start(config_path)
        parent = self.spec.parent
        self._control = await control.listen(
            self.spec.control, self._answer, lambda pid: pid == parent
        )

    async def stop(self) -> None:
        if self._control is not None:
            self._control.close()
        await super().stop()

    def not_ready(self) -> str | None:
        """Why this worker is not ready, or None."""
        if self.draining:
            return "draining"
        if not self.upstream.answering:
            return f"upstream {self.upstream.shown} not answering"
        return None

    async def _answer(self, command: str) -> bytes:
        if command == "metrics":
            # The proxy's own handler sets the gauges read at scrape time (whatever they are).
            await super().handle_metrics(_SCRAPE)
            return podmetrics.encode(podmetrics.snapshot(self.metrics.registry))
        if command == "state":
            return orjson.dumps({"serving": self.serving, "not_ready": self.not_ready()})
        return b""

    async def handle_metrics(self, request: Request) -> Response:
        try:
            data = await control.ask(self.spec.pod, "metrics", POD_SECONDS, self.spec.parent)
        except (OSError, TimeoutError, ValueError):
            body = b"the pod's metrics are not available: its supervisor did not answer\n"
            return Response(503, body, "text/plain; charset=utf-8")
        return Response(200, data, CONTENT_TYPE_LATEST)

    async def handle_ready(self, request: Request) -> Response:
        reason = self.not_ready()
        if reason is None:
            try:
                asked = control.ask(self.spec.pod, "ready", POD_SECONDS, self.spec.parent)
                answer = orjson.loads(await asked)
                reason = answer["not_ready"]
            except (OSError, TimeoutError, ValueError, KeyError, TypeError):
                reason = "the workers' supervisor did not answer"
        if reason is None:
            return Response(200, b'{"status":"ready"}', JSON)
        return Response(503, orjson.dumps({"status": "not ready", "reason": reason}), JSON)


def _die_with_parent(parent: int) -> None:
    """SIGTERM (a drain) when the supervisor goes, however it goes: no orphan keeps the ports."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it went before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    from ..serve import run, serve

    # The supervisor writes the spec on stdin (a command line is for every process to read).
    spec = Spec(**orjson.loads(argv[0] if argv else sys.stdin.readline()))
    _die_with_parent(spec.parent)
    path = Path(spec.config) if spec.config else None

    def load() -> Config:
        config = config_module.load(path, spec.flags)
        return worker_config(config, spec.index, spec.workers)

    made: list[WorkerProxy] = []

    def make(config: Config, reload: Callable[[], Config] | None) -> Proxy:
        made.append(WorkerProxy(config, reload, spec))
        return made[0]

    def started() -> None:
        made[0].serving = True

    def work() -> int:
        config = load()
        logs.setup(config.server.log_level, config.server.log_format)
        run(lambda: serve(config, load, path, started=started, make_proxy=make, reuse_port=True))
        return 0

    return exit_code("serve", work)


if __name__ == "__main__":
    sys.exit(main())
