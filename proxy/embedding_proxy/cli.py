"""`embedding-proxy`: serve, simulate-tei, bench, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import flags
from .config import settings as config_module
from .config.settings import Config
from .failure import exit_code
from .telemetry import logs
from .workers import cpus

SERVE_DESCRIPTION = """\
Run the batching proxy in front of TEI: it accepts TEI's and OpenAI's embedding APIs on one port,
coalesces concurrent requests into full upstream batches and hands every caller its own vectors.

Settings come from (lowest to highest precedence) their defaults, a YAML or TOML file (--config or
EMBEDDING_PROXY_CONFIG), the environment (EMBEDDING_PROXY_<SECTION>__<NAME>) and these flags.
"""


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML or TOML settings file (reloaded live)\n[env: EMBEDDING_PROXY_CONFIG=]",
    )
    flags.add_arguments(p)


def load_config(args: argparse.Namespace) -> Config:
    return config_module.load(args.config, flags.settings_of(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run, serve

    config = load_config(args)
    logs.setup(config.server.log_level, config.server.log_format)
    path = args.config or config_module.env_config_path()
    workers = cpus.workers(config.server.workers)
    if workers > 1:
        from .workers.supervisor import supervise

        return supervise(config, workers, path, flags.settings_of(args))
    run(lambda: serve(config, reload=lambda: load_config(args), config_path=path))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from . import simulator

    logs.setup("info")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="embedding-proxy",
        description="Batching sidecar for text-embeddings-inference (TEI).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the batching proxy in front of TEI",
        description=SERVE_DESCRIPTION,
        formatter_class=flags.HelpFormatter,
        allow_abbrev=False,
    )
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
    return exit_code(args.command, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
