"""`embedding-proxy`: serve, simulate-tei, bench, demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from . import config as config_module
from .config import Config, ConfigError

# Flag name -> setting path in the config model.
SERVE_FLAGS: dict[str, tuple[str, str]] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "metrics_port": ("server", "metrics_port"),
    "request_timeout_ms": ("server", "request_timeout_ms"),
    "drain_seconds": ("server", "drain_seconds"),
    "log_level": ("server", "log_level"),
    "upstream": ("upstream", "url"),
    "max_batch_size": ("batching", "max_batch_size"),
    "max_wait_ms": ("batching", "max_wait_ms"),
    "max_concurrency": ("batching", "max_concurrency"),
    "queue_capacity": ("batching", "queue_capacity"),
    "flush_mode": ("batching", "flush_mode"),
}


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or TOML settings file (reloaded live)")
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="API port (default 8000)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics on this port only")
    p.add_argument("--upstream", help="TEI base URL (default http://127.0.0.1:80)")
    p.add_argument("--max-batch-size", type=int, help="inputs per upstream call (default 32)")
    p.add_argument("--max-wait-ms", type=float, help="longest wait for a batch to fill")
    p.add_argument("--max-concurrency", type=int, help="upstream calls at once (default 4)")
    p.add_argument("--queue-capacity", type=int, help="queued inputs before 429 (default 4096)")
    p.add_argument("--flush-mode", help="adaptive (default) or deadline")
    p.add_argument("--request-timeout-ms", type=int, help="default deadline of a request")
    p.add_argument("--drain-seconds", type=float, help="serve this long after SIGTERM")
    p.add_argument("--log-level", help="debug, info, warning or error")


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, name) in SERVE_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out.setdefault(section, {})[name] = value
    return out


def load_config(args: argparse.Namespace) -> Config:
    return config_module.load(args.config, flags_of(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run, serve

    config = load_config(args)
    setup_logging(config.server.log_level)
    path = args.config or config_module.env_config_path()
    run(lambda: serve(config, reload=lambda: load_config(args), config_path=path))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from . import simulator

    setup_logging("info")
    simulator.run(simulator.settings_from_args(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    return demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def cmd_drain(args: argparse.Namespace) -> int:
    """The pod's preStop hook: tell the proxy (PID 1 of its container) to start draining."""
    import os
    import signal

    try:
        os.kill(args.pid, signal.SIGUSR1)
    except OSError as e:
        print(f"embedding-proxy drain: cannot signal process {args.pid}: {e}", file=sys.stderr)
        return 1
    print(f"embedding-proxy drain: asked process {args.pid} to drain")
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embedding-proxy",
        description="Batching sidecar for text-embeddings-inference (TEI).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the batching proxy in front of TEI")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    from . import simulator

    sim = sub.add_parser("simulate-tei", help="run the TEI simulator (no GPU, no model)")
    simulator.add_arguments(sim)
    sim.set_defaults(func=cmd_simulate)

    from .demo import add_arguments as add_demo_arguments

    demo = sub.add_parser("demo", help="simulator + proxy together, with curl lines to try")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    from .bench import add_arguments as add_bench_arguments

    bench = sub.add_parser("bench", help="measure proxy vs direct vs ideal batching")
    add_bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    drain = sub.add_parser(
        "drain",
        help="tell a running proxy the pod is terminating (its preStop hook): it turns unready, "
        "serves for drain_seconds, finishes queued work, and exits on SIGTERM",
    )
    drain.add_argument("--pid", type=int, default=1, help="the proxy's process (default 1)")
    drain.set_defaults(func=cmd_drain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"embedding-proxy: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
