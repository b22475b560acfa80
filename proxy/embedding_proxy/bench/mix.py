"""`embedding-proxy bench --two-populations`: interactive callers beside batch clients that keep
the queue full, on one upstream, three times: the interactive callers alone (`idle`), everyone
in one first-come-first-served queue (`no lanes`, the proxy before lanes) and with lanes
(`lanes`: batch clients in the `batch` lane by their API keys). See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..failure import Failure
from . import report
from .procs import LoadProcess, Service, ServiceFailed, Watch, start_proxy, start_simulator
from .run import _upstream_info as upstream_info
from .run import run_target, settings_of

RUNS = ("idle", "no lanes", "lanes")
INTERACTIVE_KEY = "bench-interactive"
WARMUP_S = 2.0
IDEAL_REQUESTS = 20_000  # inputs of the `ideal` reference run (--requests)


def proxy_config(run: str, args: argparse.Namespace) -> dict[str, Any]:
    """The proxy's lanes and keys for one run. `no lanes`: one lane, and every client the same
    key, so one first-come-first-served queue, as before lanes."""
    clients = args.batch_clients
    bulk = clients * args.batch_queued
    if run == "no lanes":
        lanes = [{"name": "interactive", "queue_capacity": bulk + 4096}]
        keys = [INTERACTIVE_KEY]
    else:
        lanes = [
            {"name": "interactive", "queue_capacity": 4096},
            {"name": "batch", "queue_capacity": max(1, bulk), "min_share": args.min_share},
        ]
        keys = [INTERACTIVE_KEY, *(f"{batch_key(n)} lane=batch" for n in range(clients))]
    return {"batching": {"lanes": lanes}, "auth": {"api_keys": keys}}


def batch_key(n: int) -> str:
    return f"bench-batch-{n}"


def load_specs(run: str, args: argparse.Namespace, url: str) -> list[dict[str, Any]]:
    """One load generator for the interactive callers and one for the batch clients: each its own
    process, so that the batch clients' big answers do not delay the interactive callers' clocks
    (as services on different machines would not)."""
    base = {
        "url": url + "/embed",
        "tokens": args.tokens,
        "timeout_s": args.timeout,
        "interactive": 0,
        "interactive_key": INTERACTIVE_KEY,
        "batch_clients": [],
        "warmup_s": WARMUP_S,
        "duration_s": args.duration or 10.0,
    }
    specs = [{**base, "interactive": args.interactive_callers}]
    if run != "idle":
        clients = [
            {
                "key": batch_key(n) if run == "lanes" else INTERACTIVE_KEY,
                "queued": args.batch_queued,
                "size": args.batch_request_inputs,
            }
            for n in range(args.batch_clients)
        ]
        specs.append({**base, "batch_clients": clients})
    return specs


def scrape(url: str) -> dict[str, float]:
    """The proxy's own figures for the run: mean upstream call, mean batch, 429s by lane."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
            found[key] = found.get(key, 0.0) + s.value
    calls = found.get("embedding_proxy_upstream_duration_seconds_count,route=/embed", 0)
    batches = found.get("embedding_proxy_batch_size_count", 0)
    return {
        "upstream_call_ms": 1000
        * found.get("embedding_proxy_upstream_duration_seconds_sum,route=/embed", 0)
        / max(1, calls),
        "mean_batch": found.get("embedding_proxy_batch_size_sum", 0) / max(1, batches),
        "rejected": sum(v for k, v in found.items() if k.startswith("embedding_proxy_lane_rej")),
    }


def one_run(run: str, args: argparse.Namespace, upstream: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(proxy_config(run, args), f)
    config = Path(f.name)
    proxy: Service | None = None
    loads: list[LoadProcess] = []
    try:
        try:
            proxy = start_proxy(upstream, ["--config", str(config), *shlex.split(args.proxy_args)])
        except ServiceFailed as e:
            raise Failure("the proxy did not start", e.reason, "check --proxy-args", 2) from None
        for spec in load_specs(run, args, proxy.url):
            loads.append(LoadProcess(spec, "embedding_proxy.bench.mix_load"))
        for load in loads:
            load.wait_warm()
        watch = Watch(proxy.proc.pid)
        watch.start()
        with ThreadPoolExecutor(len(loads)) as pool:  # both go at once
            parts = list(pool.map(LoadProcess.go, loads))
        watch.stop()
        result = {
            "run": run,
            "wall_s": parts[0]["wall_s"],
            "loadgen_cpu_s": sum(p["loadgen_cpu_s"] for p in parts),
            "interactive": parts[0]["interactive"],
            "batch": parts[-1]["batch"],
            "proxy_cpu_s": watch.cpu_s,
            **scrape(proxy.url),
        }
    finally:
        for load in loads:
            load.kill()
        if proxy is not None:
            proxy.stop()
        config.unlink(missing_ok=True)
    batch = result["batch"]
    batch_total = sum(c["inputs_per_s"] for c in batch)
    result["batch_inputs_per_s"] = batch_total
    result["total_inputs_per_s"] = result["interactive"]["inputs_per_s"] + batch_total
    result["batch_share"] = batch_total / max(1e-9, result["total_inputs_per_s"])
    result["client_shares"] = [c["inputs_per_s"] / max(1e-9, batch_total) for c in batch]
    result["failed"] = result["interactive"]["failed"] + sum(c["failed"] for c in batch)
    return result


def targets(by: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[tuple[str, bool]]:
    """The issue's targets, each as (what was measured against what, met)."""
    lanes, idle, fifo = by["lanes"], by["idle"], by["no lanes"]
    p99, idle_p99 = lanes["interactive"]["p99_ms"], idle["interactive"]["p99_ms"]
    bound = idle_p99 + 2 * lanes["upstream_call_ms"]
    ratio = lanes["total_inputs_per_s"] / max(1e-9, fifo["total_inputs_per_s"])
    out = [
        (
            f"interactive p99 {p99:.1f} ms ≤ idle p99 {idle_p99:.1f} ms + 2 upstream calls of "
            f"{lanes['upstream_call_ms']:.1f} ms = {bound:.1f} ms",
            p99 <= bound,
        ),
        (f"total inputs/s lanes / no lanes = {ratio:.3f} ≥ 0.95", ratio >= 0.95),
        (
            f"batch lane share {lanes['batch_share']:.3f} ≥ min_share {args.min_share}",
            lanes["batch_share"] >= args.min_share,
        ),
    ]
    shares = lanes["client_shares"]
    if len(shares) >= 2:
        fair = 1 / len(shares)
        out.append(
            (
                "batch clients' shares "
                + " / ".join(f"{s:.1%}" for s in shares)
                + f", each {fair:.0%} ± 5 points",
                all(abs(s - fair) <= 0.05 for s in shares),
            )
        )
    return out


def text_report(settings: dict[str, Any], results: list[dict[str, Any]], lines: list[str]) -> str:
    headers = [
        "run",
        "interactive p50 ms",
        "interactive p99 ms",
        "interactive inputs/s",
        "batch inputs/s",
        "total inputs/s",
        "batch share",
        "batch clients' shares",
        "upstream call ms",
        "mean batch",
        "failed",
    ]
    rows = [
        [
            r["run"],
            f"{r['interactive']['p50_ms']:.2f}",
            f"{r['interactive']['p99_ms']:.2f}",
            f"{r['interactive']['inputs_per_s']:,.0f}",
            f"{r['batch_inputs_per_s']:,.0f}",
            f"{r['total_inputs_per_s']:,.0f}",
            f"{r['batch_share']:.1%}" if r["batch"] else "-",
            " / ".join(f"{s:.1%}" for s in r["client_shares"]) or "-",
            f"{r['upstream_call_ms']:.2f}",
            f"{r['mean_batch']:.1f}",
            f"{r['failed']:,}",
        ]
        for r in results
    ]
    m = settings["machine"]
    head = (
        f"machine: {report.machine_words(m)}, Python {m['python']}\n"
        f"reference: the upstream's best (ideal: full batches of {settings['ideal_batch_size']}, "
        f"{settings['ideal_concurrency']} at once) {settings['ideal_inputs_per_s']:,.0f} inputs/s\n"
        f"{settings['interactive']} interactive callers (1 input, closed loop); "
        f"{settings['batch_clients']} batch client(s), each {settings['batch_queued']:,} inputs "
        f"outstanding in requests of {settings['batch_request_inputs']}; "
        f"{settings['duration_s']:.0f} s a run\n"
    )
    marks = "\n".join(f"{'met' if ok else 'NOT MET'}: {what}" for what, ok in lines)
    return head + "\n" + report.markdown_table(headers, rows) + "\n\n" + marks


def main(args: argparse.Namespace) -> int:
    if args.proxy or args.rate or args.sweep or args.connections:
        raise Failure(
            "--two-populations",
            "it starts its own proxies and runs closed loops",
            "give it alone",
            2,
        )
    with contextlib.ExitStack() as stack:
        upstream = args.upstream
        simulator: Service | None = None
        if upstream is None:
            try:
                simulator = start_simulator(shlex.split(args.simulator_args))
            except ServiceFailed as e:
                raise Failure("the simulator did not start", e.reason, "check it", 2) from None
            stack.callback(simulator.stop)
            upstream = simulator.url
        upstream = upstream.rstrip("/")
        settings = settings_of(args, upstream, upstream_info(upstream))
        settings["requests"] = args.requests or IDEAL_REQUESTS
        settings["inputs_per_request"] = 1
        print("bench: ideal (reference) ...", file=sys.stderr, flush=True)
        ideal = run_target(settings, "ideal", upstream, simulator, secrets.token_hex(3))
        settings.update(
            ideal_inputs_per_s=ideal["inputs_per_s"],
            # The shape that was best, when a grid was measured (ideal.py).
            ideal_batch_size=ideal.get("ideal_batch_size", settings["ideal_batch_size"]),
            ideal_concurrency=ideal.get("ideal_concurrency", settings["ideal_concurrency"]),
            interactive=args.interactive_callers,
            batch_clients=args.batch_clients,
            batch_queued=args.batch_queued,
            batch_request_inputs=args.batch_request_inputs,
            duration_s=args.duration or 10.0,
            min_share=args.min_share,
        )
        results = []
        for run in RUNS:
            print(f"bench: {run} ...", file=sys.stderr, flush=True)
            results.append(one_run(run, args, upstream))
    lines = targets({r["run"]: r for r in results}, args)
    if args.json:
        out = {"settings": settings, "results": results, "targets": dict(lines)}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(text_report(settings, results, lines))
    return 0 if all(r["failed"] == 0 for r in results) else 1
