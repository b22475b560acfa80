"""`embedding-proxy bench`: the proxy against the upstream called directly and against the best
the upstream can do (`ideal`: full pre-formed batches), side by side in one run. See
docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys

from . import run

TARGETS = ("proxy", "direct", "ideal")

__all__ = ["TARGETS", "add_arguments", "main"]


def _targets(value: str) -> list[str]:
    names = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}; got {value!r}")
    return names


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _sweep(value: str) -> tuple[str, list[int | str]]:
    from .sweep import parse_sweep

    return parse_sweep(value)


def _share(value: str) -> float:
    share = float(value)
    if not 0 <= share <= 0.9:
        raise argparse.ArgumentTypeError(f"must be within 0 and 0.9, got {value}")
    return share


def _workers(value: str) -> str:
    if value != "auto":
        _positive(value)
    return value


def _rate(value: str) -> float:
    rate = float(value)
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return rate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=_positive, help="requests per target (default 2000)")
    p.add_argument(
        "--concurrency", type=_positive, default=64, help="closed loop: callers at once (64)"
    )
    p.add_argument(
        "--rate",
        type=_rate,
        help="open loop: send this many requests a second, whether or not answers keep up",
    )
    p.add_argument("--duration", type=_rate, help="open loop: for this many seconds (default 10)")
    p.add_argument(
        "--tokens", type=int, default=16, help="simulator tokens per input, at least 3 (16)"
    )
    p.add_argument("--inputs-per-request", type=_positive, default=1, help="inputs a request (1)")
    p.add_argument(
        "--targets",
        type=_targets,
        help="comma-separated: proxy, direct, ideal (default all; proxy with --connections)",
    )
    p.add_argument("--upstream", help="TEI base URL; without it the simulator is started")
    p.add_argument(
        "--proxy",
        help="a proxy already running (e.g. the demo's): measure it instead of starting one",
    )
    p.add_argument(
        "--simulator-args",
        default="",
        help="flags for the started simulator, e.g. --simulator-args=--no-internal-batching",
    )
    p.add_argument(
        "--proxy-args", default="", help='flags for `serve`, e.g. --proxy-args="--max-wait-ms 2"'
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default="1",
        help="worker processes of the started proxy: a number or auto (1, as earlier tables)",
    )
    p.add_argument(
        "--warmup", type=int, help="untimed requests per target first (default: concurrency, ≥200)"
    )
    p.add_argument(
        "--ideal-batch-size", type=_positive, help="default: the upstream's max_client_batch_size"
    )
    p.add_argument(
        "--ideal-concurrency",
        type=_positive,
        help="batches at once for ideal (default: the proxy's max_concurrency)",
    )
    p.add_argument(
        "--connections",
        type=_positive,
        help="memory check: this many requests in flight to the proxy at once (e.g. 2048)",
    )
    p.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator's HTTP client: raw (cheapest, default) or aiohttp",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (120)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--sweep",
        type=_sweep,
        metavar="NAME=V1,V2,...",
        help="run at each value, e.g. concurrency=1,4,16,64,256 or max-concurrency=1,2,4,auto; "
        "writes the curves as CSV",
    )
    p.add_argument(
        "--plot", metavar="FILE.png", help="with --sweep: draw the curves (PNG, and SVG beside)"
    )
    p.add_argument("--csv", metavar="FILE", help="with --sweep: the CSV (default: beside --plot)")
    mix = p.add_argument_group(
        "two populations", "interactive callers beside batch clients: idle, no lanes, lanes"
    )
    mix.add_argument(
        "--two-populations",
        action="store_true",
        help="measure priority lanes (each run lasts --duration, default 10 s)",
    )
    mix.add_argument(
        "--interactive-callers", type=_positive, default=32, help="single-input callers (32)"
    )
    mix.add_argument("--batch-clients", type=_positive, default=1, help="batch clients (1)")
    mix.add_argument(
        "--batch-queued", type=_positive, default=4096, help="inputs each keeps outstanding (4096)"
    )
    mix.add_argument(
        "--batch-request-inputs", type=_positive, default=64, help="inputs a batch request (64)"
    )
    mix.add_argument(
        "--min-share", type=_share, default=0.1, help="the batch lane's min_share (0.1)"
    )


def main(args: argparse.Namespace) -> int:
    """`embedding-proxy bench`: the flags checked, then a two-population mix, a sweep or one run."""
    if args.tokens < 3:
        print("embedding-proxy bench: --tokens must be at least 3", file=sys.stderr)
        return 2
    run.check_flags(args)
    if getattr(args, "two_populations", False):
        from .mix import main as mix

        return mix(args)
    if getattr(args, "sweep", None):
        from .sweep import main as sweep

        return sweep(args)
    return run.main(args)
