"""A pod's termination as the kubelet runs it, played on real processes on loopback: TEI (the
simulator) and the proxy, with the pod spec the operator renders.

What the kubelet does (pkg/kubelet/kuberuntime, `killContainer` for every container at once):
each container's preStop hook runs first, from the moment the pod terminates; a native sidecar
(init container with restartPolicy Always) then waits until every regular container has exited;
then SIGTERM, and SIGKILL when what is left of the pod's grace period runs out (at least 2 s).
Meanwhile the endpoints mark the pod terminating, and callers keep arriving for a short while
until that reaches them.

`python -m tests.helpers.kubelet` plays one scale-down under load and prints the timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import yaml
from tests.helpers.processes import PYTHON, Process, free_port, proxy_args, running

from embedding_proxy_operator.logic.plan import plan
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
MINIMUM_GRACE_SECONDS = 2.0  # the kubelet's floor for a container's stop after its preStop hook
BIN = Path(PYTHON).parent


# ---- the pod spec ---------------------------------------------------------------------------


def rendered_pod(mode: str, sidecar: Obj, tei_port: int) -> tuple[Obj, Obj]:
    """The pod spec of a TEI Deployment after the operator's patch, and the proxy's config, as
    the operator renders them for an EmbeddingProxy with `sidecar` settings."""
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tei", "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "tei", "image": "tei", "ports": [{"containerPort": tei_port}]}
                    ]
                }
            }
        },
    }
    proxy = {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "targetRef": {"name": "tei"},
            "upstream": {"url": f"http://127.0.0.1:{tei_port}"},
            "sidecar": {"mode": mode, **sidecar},
        },
    }
    result = plan(proxy, deployment, native_supported=True, sleep_action=True)
    assert result.ops and result.config is not None, result.facts
    after = jsonpatch.apply_patch(copy.deepcopy(deployment), result.ops)
    return after["spec"]["template"]["spec"], result.config


@dataclass
class Container:
    name: str
    process: Process
    spec: Obj
    sidecar: bool


def containers(pod: Obj, processes: Mapping[str, Process]) -> list[Container]:
    out = [
        Container(c["name"], processes[c["name"]], c, sidecar=True)
        for c in pod.get("initContainers") or []
        if c.get("restartPolicy") == "Always"
    ]
    out += [Container(c["name"], processes[c["name"]], c, False) for c in pod["containers"]]
    return out


def exec_command(command: list[str], container: Container) -> list[str]:
    """An exec hook's command, as it runs inside the container: the proxy's image puts
    `embedding-proxy` on the PATH and runs the proxy as PID 1, which is this process here."""
    if command == names.DRAIN_COMMAND:
        return [str(BIN / "embedding-proxy"), "drain", "--pid", str(container.process.proc.pid)]
    if command[:1] == ["sleep"]:
        return command
    raise ValueError(f"no stand-in for the exec hook {command!r}")


# ---- the termination ------------------------------------------------------------------------


@dataclass
class Timeline:
    start: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)

    def mark(self, what: str) -> None:
        self.events.append((time.monotonic() - self.start, what))

    def at(self, what: str) -> float:
        return next(t for t, e in self.events if e == what)

    def __str__(self) -> str:
        return "\n".join(f"{t:7.2f} s  {e}" for t, e in self.events)


async def _pre_stop(c: Container, handler: Obj, grace: float, timeline: Timeline) -> None:
    timeline.mark(f"{c.name}: preStop starts")
    if "sleep" in handler:
        work = asyncio.sleep(handler["sleep"]["seconds"])
    else:
        command = exec_command(handler["exec"]["command"], c)
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        work = proc.wait()
    try:
        await asyncio.wait_for(work, grace)
    except TimeoutError:
        timeline.mark(f"{c.name}: preStop cut short by the grace period")
    timeline.mark(f"{c.name}: preStop ends")


async def _wait_exit(process: Process, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while process.proc.poll() is None:
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(0.02)
    return True


async def terminate(pod: Obj, processes: Mapping[str, Process], timeline: Timeline) -> None:
    """Stop the pod's containers as the kubelet does, from now on."""
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    all_containers = containers(pod, processes)
    regular_exited = {c.name: asyncio.Event() for c in all_containers if not c.sidecar}

    async def kill(c: Container) -> None:
        started = time.monotonic()
        handler = (c.spec.get("lifecycle") or {}).get("preStop")
        if handler is not None:
            await _pre_stop(c, handler, grace, timeline)
        if c.sidecar:
            await asyncio.gather(*(e.wait() for e in regular_exited.values()))
        left = max(MINIMUM_GRACE_SECONDS, grace - (time.monotonic() - started))
        timeline.mark(f"{c.name}: SIGTERM")
        c.process.signal(signal.SIGTERM)
        if not await _wait_exit(c.process, left):
            c.process.proc.kill()
            timeline.killed.append(c.name)
            timeline.mark(f"{c.name}: SIGKILL")
        c.process.proc.wait()
        timeline.mark(f"{c.name}: exited ({c.process.proc.returncode})")
        if c.name in regular_exited:
            regular_exited[c.name].set()

    await asyncio.gather(*(kill(c) for c in all_containers))


# ---- a scale-down under load ----------------------------------------------------------------


@dataclass
class Outcome:
    timeline: Timeline
    statuses: list[int]  # one per answered request
    failures: list[str]  # requests that got no answer (connection-level failures)
    sent: int
    proxy_exit: int | None
    proxy_log: str


@contextmanager
def pod_processes(mode: str, sidecar: Obj, directory: Path) -> Iterator[tuple[Obj, Obj]]:
    """Start TEI (the simulator) and the proxy as the rendered pod spec says; yields the pod
    spec and the processes by container name."""
    tei_port, api_port, metrics_port = free_port(), free_port(), free_port()
    pod, config = rendered_pod(mode, sidecar, tei_port)
    config["server"] = {**config["server"], "metrics_port": metrics_port}
    config_path = directory / f"proxy-{api_port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    tei_args = [PYTHON, "-m", "embedding_proxy.simulator", "--port", str(tei_port)]
    # As many worker processes as the operator rendered (from the CPU limit: 2 by default).
    workers = ["--workers", str(config["server"]["workers"])]
    with ExitStack() as stack:
        tei = stack.enter_context(
            running([*tei_args, "--base-ms", "20"], tei_port, directory / f"tei-{tei_port}.log")
        )
        proxy = stack.enter_context(
            running(
                proxy_args(tei.url, api_port, "--config", str(config_path), *workers),
                api_port,
                directory / f"proxy-{api_port}.log",
                ready_path="/ready",
            )
        )
        yield pod, {"tei": tei, names.SIDECAR_NAME: proxy}


async def scale_down_under_load(
    pod: Obj,
    processes: Mapping[str, Process],
    propagation_seconds: float = 0.5,
    callers: int = 16,
    warmup_answers: int = 100,
    on_timeline: Callable[[Timeline], None] | None = None,
) -> Outcome:
    """Steady load through the proxy; then the pod terminates: callers keep sending for
    `propagation_seconds` (the endpoints catching up), then send nothing new; the kubelet stops
    the containers meanwhile. Every request sent is accounted for."""
    proxy = processes[names.SIDECAR_NAME]
    statuses: list[int] = []
    failures: list[str] = []
    sent = 0
    stop_sending = [float("inf")]
    timeline = Timeline()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def caller(n: int) -> None:
            nonlocal sent
            i = 0
            while time.monotonic() < stop_sending[0]:
                sent += 1
                try:
                    async with http.post(
                        proxy.url + "/embed", json={"inputs": f"caller {n} call {i}"}
                    ) as resp:
                        await resp.read()
                        statuses.append(resp.status)
                except (aiohttp.ClientError, TimeoutError) as e:
                    failures.append(repr(e))
                i += 1

        async def readiness() -> None:
            seen = 200
            while proxy.proc.poll() is None:
                try:
                    async with http.get(proxy.url + "/ready") as resp:
                        status = resp.status
                except aiohttp.ClientError:
                    status = 0
                if status != seen:
                    timeline.mark(f"proxy /ready: {status or 'no answer'}")
                    seen = status
                await asyncio.sleep(0.05)

        load = asyncio.gather(*(caller(n) for n in range(callers)))
        end = time.monotonic() + 60
        while len(statuses) < warmup_answers and time.monotonic() < end:
            await asyncio.sleep(0.05)
        timeline.start = time.monotonic()
        timeline.mark(f"pod terminating ({len(statuses)} answers so far)")
        stop_sending[0] = timeline.start + propagation_seconds
        watcher = asyncio.create_task(readiness())
        kubelet = asyncio.create_task(terminate(pod, processes, timeline))
        await asyncio.sleep(propagation_seconds)
        timeline.mark("callers send nothing new")
        await load
        timeline.mark(f"every caller has its answers ({sent} sent)")
        await kubelet
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    timeline.events.sort()
    if on_timeline is not None:
        on_timeline(timeline)
    return Outcome(timeline, statuses, failures, sent, proxy.proc.returncode, proxy.output())


def without_hooks(pod: Obj) -> Obj:
    """The pod as it was before the operator managed termination: no preStop hooks, 30 s."""
    out = copy.deepcopy(pod)
    out.pop("terminationGracePeriodSeconds", None)
    for c in out.get("initContainers", []) + out["containers"]:
        c.pop("lifecycle", None)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["Native", "Container"], default="Native")
    p.add_argument("--drain-seconds", type=int, default=5)
    p.add_argument("--grace-seconds", type=int, default=20)
    p.add_argument("--propagation-seconds", type=float, default=1.0)
    p.add_argument("--callers", type=int, default=32)
    p.add_argument("--without-hooks", action="store_true", help="the pod spec before the fix")
    args = p.parse_args()
    sidecar = {"drainSeconds": args.drain_seconds, "graceSeconds": args.grace_seconds}
    with (
        tempfile.TemporaryDirectory() as tmp,
        pod_processes(args.mode, sidecar, Path(tmp)) as (pod, processes),
    ):
        if args.without_hooks:
            pod = without_hooks(pod)
        print(yaml.safe_dump({"pod": pod}, sort_keys=False))
        outcome = asyncio.run(
            scale_down_under_load(
                pod, processes, args.propagation_seconds, args.callers, warmup_answers=500
            )
        )
    counts: dict[int, int] = {}
    for status in outcome.statuses:
        counts[status] = counts.get(status, 0) + 1
    print(outcome.timeline)
    print(f"sent {outcome.sent}; answered {counts}; no answer {len(outcome.failures)}")
    print(f"killed: {outcome.timeline.killed or 'none'}; proxy exit {outcome.proxy_exit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
