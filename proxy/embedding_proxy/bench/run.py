"""Runs the benchmark: starts what is needed, drives each target in turn, prints the report."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shlex
import sys
from typing import Any

import orjson

from ..config.settings import BatchingConfig
from ..failure import Failure
from . import ideal, report, verify
from .procs import (
    LoadProcess,
    Service,
    ServiceFailed,
    Watch,
    concurrency_limit,
    get_json,
    local_pid,
    raise_nofile_limit,
    start_proxy,
    supervisor_of,
)
from .procs import start_simulator as start_sim

DEFAULT_REQUESTS = 2000
DEFAULT_DURATION = 10.0
MEMORY_TARGET_MB = 150


# `ideal`'s calls at once when the proxy's max_concurrency is auto (it has no one number).
AUTO_IDEAL_CONCURRENCY = 4


def _proxy_max_concurrency(proxy_args: list[str]) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--max-concurrency")
    known, _ = p.parse_known_args(proxy_args)
    value = known.max_concurrency or BatchingConfig().max_concurrency
    return int(value) if str(value).isdigit() else AUTO_IDEAL_CONCURRENCY


def default_targets(args: argparse.Namespace) -> list[str]:
    if args.connections or (args.proxy and not args.upstream):
        return ["proxy"]
    return ["proxy", "direct", "ideal"]


def settings_of(args: argparse.Namespace, upstream: str, info: dict[str, Any]) -> dict[str, Any]:
    connections = args.connections
    concurrency = connections or args.concurrency
    duration = (args.duration or DEFAULT_DURATION) if args.rate else None
    requests = args.requests or (4 * connections if connections else DEFAULT_REQUESTS)
    if args.rate:
        requests = max(1, round(args.rate * duration))
    targets = args.targets or default_targets(args)
    warmup = args.warmup if args.warmup is not None else max(200, concurrency)
    proxy_args = shlex.split(args.proxy_args)
    return {
        "targets": targets,
        "requests": requests,
        "concurrency": concurrency,
        "connections": connections,
        "tokens": args.tokens,
        "inputs_per_request": args.inputs_per_request,
        "warmup": warmup,
        "upstream": upstream,
        "proxy_url": args.proxy.rstrip("/") if args.proxy else None,
        "rate": args.rate,
        "duration_s": duration,
        "progress": sys.stderr.isatty(),
        "simulator_args": args.simulator_args if not (args.upstream or args.proxy) else None,
        "proxy_args": proxy_args,
        "workers": args.workers if not args.proxy else None,
        "ideal_batch_size": args.ideal_batch_size or int(info.get("max_client_batch_size", 32)),
        "ideal_concurrency": args.ideal_concurrency or _proxy_max_concurrency(proxy_args),
        # The best of a grid around that shape (bench/ideal.py), unless a shape is given.
        "ideal_grid": not (args.ideal_batch_size or args.ideal_concurrency),
        "timeout_s": args.timeout,
        "client": args.client,
        "machine": report.machine(),
    }


def load_spec(settings: dict[str, Any], target: str, url: str, run_id: str) -> dict[str, Any]:
    """What the load generator sends for a target. All targets carry the same inputs count;
    each its own texts (a salt), so no answer is a cache hit of another target's."""
    per_request = settings["inputs_per_request"]
    concurrency = settings["concurrency"]
    if target == "ideal":
        per_request, concurrency = settings["ideal_batch_size"], settings["ideal_concurrency"]
    inputs = settings["requests"] * settings["inputs_per_request"]
    return {
        "url": url + "/embed",
        "tokens": settings["tokens"],
        "inputs": inputs,
        "inputs_per_request": per_request,
        "warmup_inputs": settings["warmup"] * settings["inputs_per_request"],
        "concurrency": concurrency,
        "salt": f"{target[0]}{run_id}-",
        "timeout_s": settings["timeout_s"],
        "client": settings["client"],
        # Ideal is the best the upstream can do: full batches back to back, never open loop.
        "rate": settings["rate"] if target != "ideal" else None,
        "label": target,
        "progress": settings["progress"],
    }


def _upstream_info(upstream: str) -> dict[str, Any]:
    try:
        return get_json(upstream + "/info")
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise Failure(
            f"cannot read {upstream}/info",
            why,
            "start TEI there, or leave out --upstream to measure against the built-in simulator",
        ) from None


def run_target(
    settings: dict[str, Any], target: str, upstream: str, simulator: Service | None, run_id: str
) -> dict[str, Any]:
    if target != "ideal" or not settings.get("ideal_grid"):
        return _run_one(settings, target, upstream, simulator, run_id)

    def shape(batch: int, calls: int) -> dict[str, Any]:
        at = {**settings, "ideal_batch_size": batch, "ideal_concurrency": calls}
        return _run_one(at, target, upstream, simulator, f"{run_id}{batch}x{calls}")

    return ideal.best(settings["ideal_batch_size"], settings["ideal_concurrency"], shape)


def _run_one(
    settings: dict[str, Any], target: str, upstream: str, simulator: Service | None, run_id: str
) -> dict[str, Any]:
    proxy: Service | None = None
    running = settings["proxy_url"]
    try:
        if target == "proxy" and not running:
            workers = ["--workers", str(settings["workers"])]  # --proxy-args may say otherwise
            proxy = start_proxy(upstream, [*workers, *settings["proxy_args"]])
    except ServiceFailed as e:
        raise Failure("the proxy did not start", e.reason, "check --proxy-args", 2) from None
    load: LoadProcess | None = None
    try:
        url = upstream
        # The upstream's CPU too, when it runs here (and is not the running proxy itself).
        pids = {"upstream": simulator.proc.pid if simulator else None}
        if simulator is None and upstream != running:
            pids["upstream"] = local_pid(upstream)
        if target == "proxy":
            url = proxy.url if proxy is not None else running
            # A running proxy's CPU is measured when it runs on this machine.
            pids["proxy"] = (
                proxy.proc.pid if proxy is not None else supervisor_of(local_pid(running))
            )
        load = LoadProcess(load_spec(settings, target, url, run_id))
        load.wait_warm()
        watches = {name: Watch(pid) for name, pid in pids.items() if pid is not None}
        for watch in watches.values():
            watch.start()
        result = load.go()
        for watch in watches.values():
            watch.stop()
        if target == "proxy":
            # What the proxy ran at by the end (auto's finding, or the fixed setting).
            result["proxy_concurrency_limit"] = concurrency_limit(url)
        if proxy is not None:
            result["proxy_inputs_per_call"] = verify.inputs_per_call(proxy.url)
        if target == "proxy" and url != upstream:
            # Then, unmeasured: are the answers still each caller's own, in order?
            checked = verify.answers(url, upstream, run_id)
            result["answers_checked"], result["answers_wrong"] = checked
    finally:
        if load is not None:
            load.kill()
        if proxy is not None:
            proxy.stop()
    result["target"] = target
    if "upstream" in watches:
        result["upstream_cpu_s"] = watches["upstream"].cpu_s
    if "proxy" in watches:
        w = watches["proxy"]
        result["proxy_cpu_s"] = w.cpu_s
        result["proxy_cpu_us_per_request"] = w.cpu_s / max(1, result["requests"]) * 1e6
        result["proxy_peak_rss_mb"] = w.peak_rss / 2**20
        result["proxy_switches_per_request"] = w.switches / max(1, result["requests"])
    return result


def check_flags(args: argparse.Namespace) -> None:
    """Flags that cannot go together: one line, exit code 2."""
    if args.proxy and args.proxy_args:
        raise Failure(
            "--proxy and --proxy-args", "a running proxy has its own flags", "give one", 2
        )
    if args.proxy and not args.upstream and set(args.targets or []) - {"proxy"}:
        raise Failure(
            "direct and ideal need the upstream",
            "--proxy names only the proxy",
            "add --upstream with the proxy's TEI, or --targets proxy",
            2,
        )
    if args.duration and not args.rate and not getattr(args, "two_populations", False):
        raise Failure("--duration", "it is the length of an open-loop run", "add --rate", 2)
    if args.rate and args.connections:
        raise Failure("--rate and --connections", "they are different runs", "give one", 2)
    if getattr(args, "sweep", None) and (args.rate or args.proxy):
        raise Failure(
            "--sweep with --rate or --proxy",
            "a sweep starts its own processes and runs a closed loop",
            "leave one out",
            2,
        )


def main(args: argparse.Namespace) -> int:
    """One run of the targets side by side (`bench/__init__.main` picks this, a sweep or a mix)."""
    if getattr(args, "plot", None) or getattr(args, "csv", None):
        print("embedding-proxy bench: --plot and --csv go with --sweep", file=sys.stderr)
        return 2
    fd_limit = raise_nofile_limit()
    if args.connections and args.connections + 64 > fd_limit:
        print(f"embedding-proxy bench: file-descriptor limit {fd_limit} too low", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        simulator: Service | None = None
        upstream = args.upstream
        if upstream is None and args.proxy:
            # TEI's /info, forwarded by the proxy, says what ideal batching would be.
            upstream = args.proxy
        elif upstream is None:
            try:
                simulator = start_sim(shlex.split(args.simulator_args))
            except ServiceFailed as e:
                raise Failure(
                    "the simulator did not start", e.reason, "check --simulator-args", 2
                ) from None
            stack.callback(simulator.stop)
            upstream = simulator.url
        upstream = upstream.rstrip("/")
        settings = settings_of(args, upstream, _upstream_info(upstream))
        run_id = secrets.token_hex(3)
        results = []
        for target in settings["targets"]:
            print(f"bench: {target} ...", file=sys.stderr, flush=True)
            results.append(run_target(settings, target, upstream, simulator, run_id))
    if args.json:
        out = {"settings": settings, "results": results, "ratios": report.ratios(results)}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(report.text_report(settings, results))
        if settings["connections"]:
            _print_memory_check(results)
    failed = any(r["failed"] or r.get("grid_failed") or r.get("answers_wrong") for r in results)
    return 1 if failed else 0


def _print_memory_check(results: list[dict[str, Any]]) -> None:
    for r in results:
        if "proxy_peak_rss_mb" in r:
            mb = r["proxy_peak_rss_mb"]
            verdict = "within" if mb <= MEMORY_TARGET_MB else "over"
            print(f"memory: proxy peak RSS {mb:.1f} MB, {verdict} the {MEMORY_TARGET_MB} MB target")
