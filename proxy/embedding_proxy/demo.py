"""`embedding-proxy demo`: the simulator and the proxy together, with curl lines to paste.

The demo never fronts a program it did not start: its simulator gets a free port (or the one
given, if that is free) and counts as up only once that very process listens there; the proxy
takes port 8000, or a free one when 8000 is busy and no `--port` was given.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import urllib.error
import urllib.request

from .bench.procs import PYTHON, ServiceFailed, free_port, start_service
from .config.settings import load
from .failure import Failure

DEFAULT_PORT = 8000

CURL = """
embedding-proxy is up on http://127.0.0.1:{port} in front of {upstream}{sim_note}.
Try it from another terminal:

  curl -s http://127.0.0.1:{port}/embed -H 'Content-Type: application/json' \\
       -d '{{"inputs": ["What is Deep Learning?", "Batching makes GPUs busy"]}}' | head -c 200; echo
  curl -s http://127.0.0.1:{port}/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{{"input": "hello", "model": "any"}}' | head -c 200; echo
  curl -s http://127.0.0.1:{port}/embed -H 'Content-Type: application/json' \\
       -d '{{"input": "one text"}}' | head -c 120; echo     # the proxy's own short form
  curl -s http://127.0.0.1:{port}/ready
  curl -s http://127.0.0.1:{port}/metrics | grep ^embedding_proxy_batch_size
  {bench} bench --proxy http://127.0.0.1:{port} --upstream {upstream} --requests 2000

Ctrl-C stops {what}.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port", type=int, help=f"proxy port (default {DEFAULT_PORT}, or a free one if busy)"
    )
    p.add_argument("--upstream", help="a running TEI; without it the simulator is started")
    p.add_argument("--simulator-port", type=int, help="simulator port (default: a free one)")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _upstream_problem(url: str) -> str | None:
    """Why `url` does not answer as TEI does, or None when its /health says 200."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=3) as resp:
            return None if resp.status == 200 else f"/health answered {resp.status}"
    except urllib.error.HTTPError as e:
        return f"/health answered {e.code}"
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)


def demo(args: argparse.Namespace) -> int:
    from .serve import run, serve

    port = args.port
    if port is None:
        port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else free_port()
        if port != DEFAULT_PORT:
            print(f"embedding-proxy demo: port {DEFAULT_PORT} is busy; the proxy takes {port}")
    simulator = None
    note = ""
    upstream = args.upstream
    if upstream is None:
        sim_port = args.simulator_port or free_port()
        if args.simulator_port and not _port_is_free(sim_port):
            raise Failure(
                f"cannot start the simulator on port {sim_port}",
                "another program listens there",
                "choose another --simulator-port, or leave it out for a free one",
            )
        command = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1"]
        try:
            simulator = start_service(
                "simulator", [*command, "--port", str(sim_port)], sim_port, "/health"
            )
        except ServiceFailed as e:
            raise Failure(
                "the simulator did not start", e.reason, "see above, then try again"
            ) from None
        upstream = simulator.url
    else:
        problem = _upstream_problem(upstream)
        if problem is not None:
            note = " (not answering yet)"
            print(
                f"embedding-proxy demo: warning: {upstream} does not answer ({problem}); the proxy "
                "starts anyway and its /ready says 503 until TEI answers there",
                file=sys.stderr,
            )
    config = load(
        flags={"server": {"port": port, "host": "127.0.0.1"}, "upstream": {"url": upstream}}
    )
    bench = os.path.join(os.path.dirname(sys.executable), "embedding-proxy")

    def started() -> None:
        print(
            CURL.format(
                port=port,
                upstream=upstream,
                sim_note=" (the built-in TEI simulator: not a real model)" if simulator else note,
                bench=bench,
                what="the proxy and the simulator" if simulator else "the proxy",
            ),
            flush=True,
        )

    try:
        run(lambda: serve(config, started=started))
    finally:
        if simulator is not None:
            simulator.stop()
    return 0
