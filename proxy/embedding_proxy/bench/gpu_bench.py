"""`scripts/gpu-bench`: the bench's proxy, direct and ideal against a real forward pass, in one
bounded run, as a markdown table.

For each model it starts `simulate-tei --backend torch` once, measures the encoder alone (the
reference speed: inputs/s of bare forward passes, no HTTP), then runs `embedding-proxy bench
--upstream` against it: `ideal` once, `direct` at each concurrency, `proxy` at each concurrency and
worker count. Every cell is a short pilot run (to learn its rate) and a run sized from the pilot to
last about `--cell-seconds`, each killed at a hard time limit; cells that do not fit in what is left
of `--budget-s` are skipped and listed. Worker counts are passed as `serve --workers N`; a proxy
without that flag runs one worker, and the table says which counts were skipped and why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..failure import Failure
from ..simulator.torch_backend import CLS_ID, SEP_ID, Encoder, import_torch
from . import report
from .procs import PYTHON, Service, ServiceFailed, free_port, start_service

IDEAL_CONCURRENCY = (
    4  # ideal: full batches, this many at once (the proxy's max_concurrency default)
)
START_TIMEOUT_S = 300.0  # importing torch and building a model on a cold machine


@dataclass
class Plan:
    models: list[str]
    concurrency: list[int]
    workers: list[int]
    tokens: int
    device: str
    torch_threads: int | None
    cell_seconds: float
    budget_s: float
    simulator_args: list[str]
    proxy_args: list[str]
    command: str
    out: str | None = None
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


def _ints(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,64,512, got {value!r}") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of at least 1, got {value!r}")
    return numbers


FULL = {"models": "minilm-l6,bert-base", "concurrency": [1, 64, 512], "workers": [1, 2, 4]}
FULL |= {"tokens": 128, "device": "auto", "cell_seconds": 5.0}
# A check of the plumbing that runs anywhere: the tiny test model on one CPU thread.
QUICK = {"models": "tiny", "concurrency": [1, 8], "workers": [1, 2], "tokens": 8}
QUICK |= {"device": "cpu", "cell_seconds": 1.0, "torch_threads": 1}


def parse(argv: list[str] | None) -> Plan:
    p = argparse.ArgumentParser(
        prog="scripts/gpu-bench",
        description="proxy/direct/ideal against simulate-tei --backend torch, as a markdown table",
    )
    p.add_argument("out", nargs="?", help="write the table here (default: stdout)")
    p.add_argument("--models", help="comma-separated (minilm-l6,bert-base)")
    p.add_argument("--concurrency", type=_ints, help="callers at once (1,64,512)")
    p.add_argument("--workers", type=_ints, help="proxy worker processes (1,2,4)")
    p.add_argument("--tokens", type=int, help="tokens per input (128)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), help="auto: cuda if there is one")
    p.add_argument("--torch-threads", type=int, help="CPU threads of the encoder (torch's default)")
    p.add_argument("--cell-seconds", type=float, help="timed part of each cell, seconds (5)")
    p.add_argument("--budget-s", type=float, default=450.0, help="whole run, seconds (450)")
    p.add_argument("--simulator-args", default="", help="more flags for simulate-tei")
    p.add_argument("--proxy-args", default="", help="more flags for embedding-proxy serve")
    p.add_argument(
        "--quick",
        action="store_true",
        help="plumbing check: defaults become the tiny test model on one CPU thread, "
        "concurrency 1,8, workers 1,2, 8 tokens, 1-second cells",
    )
    a = p.parse_args(argv)
    given = {k: v for k, v in vars(a).items() if v is not None}
    v = {**FULL, **(QUICK if a.quick else {}), **given}
    if v["tokens"] < 3:
        p.error("--tokens must be at least 3")
    simulator_args = shlex.split(a.simulator_args)
    if v.get("torch_threads"):
        simulator_args += ["--torch-threads", str(v["torch_threads"])]
    return Plan(
        models=[m.strip() for m in v["models"].split(",") if m.strip()],
        concurrency=v["concurrency"],
        workers=v["workers"],
        tokens=v["tokens"],
        device=v["device"],
        torch_threads=v.get("torch_threads"),
        cell_seconds=v["cell_seconds"],
        budget_s=a.budget_s,
        simulator_args=simulator_args,
        proxy_args=shlex.split(a.proxy_args),
        command=shlex.join(["scripts/gpu-bench", *(argv if argv is not None else sys.argv[1:])]),
        out=a.out,
    )


def proxy_has_workers() -> bool:
    """Whether `embedding-proxy serve` takes `--workers` (worker processes)."""
    done = subprocess.run(
        [PYTHON, "-m", "embedding_proxy.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "--workers" in done.stdout


def reference_speed(plan: Plan, model: str, batches: tuple[int, ...]) -> dict[str, Any]:
    """The encoder alone, in this process: inputs/s of back-to-back passes at each batch size
    (from the median pass of at least three and at least a second's worth)."""
    encoder = Encoder(model, plan.device, plan.torch_threads)
    tokens = plan.tokens
    torch = encoder.torch
    out: dict[str, Any] = {"describe": encoder.describe(), "torch": torch.__version__}
    for batch in batches:
        ids = [[CLS_ID, *range(1000 + i, 1000 + i + tokens - 2), SEP_ID] for i in range(batch)]
        encoder(ids)  # warm-up at this shape
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - started < 1.0:
            begun = time.perf_counter()
            encoder(ids)
            times.append(time.perf_counter() - begun)
        # The median pass: on a shared machine, robust to the passes that other work slowed.
        out[f"batch {batch}"] = batch / statistics.median(times)
    del encoder
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def machine(device: str) -> dict[str, Any]:
    m = report.machine()
    gpu = "none"
    with contextlib.suppress(ImportError):
        import torch

        if device != "cpu" and torch.cuda.is_available():
            gpu = f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return {**m, "gpu": gpu, "load_start": os.getloadavg()[0]}


def start_simulator(plan: Plan, model: str) -> Service:
    port = free_port()
    args = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--backend", "torch", "--model", model, "--device", plan.device]
    return start_service(
        "simulator", [*args, *plan.simulator_args], port, "/health", START_TIMEOUT_S
    )


def bench(
    upstream: str, target: str, concurrency: int, requests: int, plan: Plan, proxy_args: list[str]
) -> tuple[dict[str, Any] | None, str]:
    """One `embedding-proxy bench` run: its result, or None and why."""
    args = [PYTHON, "-m", "embedding_proxy.cli", "bench", "--upstream", upstream, "--json"]
    args += ["--targets", target, "--concurrency", str(concurrency), "--requests", str(requests)]
    args += ["--tokens", str(plan.tokens), "--warmup", str(concurrency), "--timeout", "60"]
    args += ["--ideal-concurrency", str(IDEAL_CONCURRENCY)]
    if target == "proxy":
        args.append("--proxy-args=" + shlex.join(proxy_args))
    limit = max(20.0, 4 * plan.cell_seconds + 15)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=min(limit, max(plan.left(), 1.0)))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the bench and the proxy and load it started
        proc.communicate()
        return None, f"stopped at its {limit:.0f} s limit"
    try:
        return orjson.loads(stdout)["results"][0], ""
    except (orjson.JSONDecodeError, KeyError, IndexError):
        lines = stderr.decode(errors="replace").strip().splitlines()
        return None, lines[-1] if lines else f"bench exited with {proc.returncode}"


def stats(upstream: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(upstream + "/simulator/stats", method=method)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return orjson.loads(resp.read())


def cell(
    upstream: str, target: str, concurrency: int, plan: Plan, proxy_args: list[str]
) -> dict[str, Any]:
    """A pilot run for the rate, then a run sized to last about `cell_seconds`."""
    pilot_requests = max(2 * concurrency, 32)
    pilot, why = bench(upstream, target, concurrency, pilot_requests, plan, proxy_args)
    if pilot is None:
        return {"error": f"pilot: {why}"}
    per_request = 32 if target == "ideal" else 1  # ideal's requests are inputs, sent in batches
    rate = max(pilot["inputs_per_s"], 1.0) / per_request
    requests = max(pilot_requests, int(rate * plan.cell_seconds) * per_request)
    stats(upstream, "DELETE")
    result, why = bench(upstream, target, concurrency, requests, plan, proxy_args)
    if result is None:
        return {"error": why}
    s = stats(upstream)
    result["upstream_batch"] = s["inputs_total"] / max(s["forward_passes"], 1)
    return result


def run(plan: Plan) -> str:
    workers_ok = proxy_has_workers()
    info = machine(plan.device)
    rows: list[list[str]] = []
    notes: list[str] = []
    references: list[str] = []
    if not workers_ok:
        extra = [w for w in plan.workers if w != 1]
        if extra:
            notes.append(
                f"skipped: {', '.join(map(str, extra))} worker(s), because this proxy's `serve` "
                "has no `--workers` flag (one process); proxy rows run one worker"
            )
        plan.workers = [1]
    cells = len(plan.models) * (1 + len(plan.concurrency) * (1 + len(plan.workers)))
    for model in plan.models:
        if plan.left() <= 0:
            notes.append(f"skipped: {model}, out of time")
            continue
        ref = reference_speed(plan, model, (32, 256))
        references.append(
            f"- {model}: {ref['describe']}; encoder alone at {plan.tokens} tokens/input: "
            + ", ".join(f"{v:,.0f} inputs/s at {k}" for k, v in ref.items() if k.startswith("b"))
        )
        info["torch"] = ref["torch"]
        try:
            sim = start_simulator(plan, model)
        except (ServiceFailed, TimeoutError) as e:
            notes.append(f"skipped: {model}, the simulator did not start ({e})")
            continue
        try:
            todo = [("ideal", IDEAL_CONCURRENCY, None)]
            for c in plan.concurrency:
                todo.append(("direct", c, None))
                todo += [("proxy", c, w) for w in plan.workers]
            for target, c, w in todo:
                if plan.left() < 2 * plan.cell_seconds + 5:
                    notes.append(f"skipped: {model} {target} c={c} w={w}, out of time")
                    continue
                proxy_args = [*(["--workers", str(w)] if workers_ok else []), *plan.proxy_args]
                result = cell(sim.url, target, c, plan, proxy_args)
                rows.append(_row(model, target, c, w, result))
        finally:
            sim.stop()
    return _document(plan, info, references, rows, notes, cells)


def _row(model: str, target: str, c: int, w: int | None, r: dict[str, Any]) -> list[str]:
    head = [model, target, "-" if target == "ideal" else str(c), "-" if w is None else str(w)]
    if "error" in r:
        return [*head, "failed: " + r["error"], *["-"] * 7]
    cpu = r.get("proxy_cpu_us_per_request")
    return [
        *head,
        f"{r['inputs_per_s']:,.0f}",
        f"{r['p50_ms']:.2f}",
        f"{r['p99_ms']:.2f}",
        "-" if cpu is None else f"{cpu:.0f}",
        f"{r['upstream_batch']:.1f}",
        f"{100 * r['loadgen_cpu_s'] / max(r['wall_s'], 1e-9):.0f}",
        f"{r['ok']:,}",
        f"{r['failed']:,}",
    ]


HEADERS = ["model", "target", "concurrency", "workers", "inputs/s", "p50 ms", "p99 ms"]
HEADERS += ["proxy CPU µs/req", "upstream batch (avg)", "load generator CPU %", "ok", "failed"]


def _document(
    plan: Plan,
    info: dict[str, Any],
    references: list[str],
    rows: list[list[str]],
    notes: list[str],
    cells: int,
) -> str:
    took = time.monotonic() - plan.started
    load = "load average {:.1f} at the start, {:.1f} at the end".format(
        info["load_start"], os.getloadavg()[0]
    )
    lines = [
        f"`{plan.command}`: {plan.tokens} tokens/input, single-input requests (ideal: batches of "
        f"32, {IDEAL_CONCURRENCY} at once), about {plan.cell_seconds:g} s per cell; "
        f"{len(rows)} of {cells} cells in {took:.0f} s",
        "",
        f"- machine: {report.machine_words(info)}; "
        f"GPU: {info['gpu']}; {info['system']}, Python {platform.python_version()}, "
        f"torch {info.get('torch', '?')}; {load}",
        *references,
        *[f"- {n}" for n in notes],
        "",
        report.markdown_table(HEADERS, rows) if rows else "(no cell ran)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    plan = parse(argv)
    try:
        import_torch()
    except Failure as e:
        print(f"gpu-bench: {e}", file=sys.stderr)
        return 2
    document = run(plan)
    if plan.out:
        with open(plan.out, "w") as f:
            f.write(document)
        print(f"gpu-bench: wrote {plan.out}", file=sys.stderr)
    else:
        sys.stdout.write(document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
