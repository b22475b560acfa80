"""`embedding-proxy demo`: the simulator and the proxy together, with curl lines to paste."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request

from .config import load

CURL = """
embedding-proxy is up on http://127.0.0.1:{port} in front of {upstream}{sim_note}.
Try it from another terminal:

  curl -s http://127.0.0.1:{port}/embed -H 'Content-Type: application/json' \\
       -d '{{"inputs": ["What is Deep Learning?", "Batching makes GPUs busy"]}}' | head -c 200; echo
  curl -s http://127.0.0.1:{port}/embed -H 'Content-Type: application/json' \\
       -d '{{"input": "one text"}}' | head -c 120; echo
  curl -s http://127.0.0.1:{port}/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{{"input": "hello", "model": "any"}}' | head -c 200; echo
  curl -s http://127.0.0.1:{port}/ready
  curl -s http://127.0.0.1:{port}/metrics | grep ^embedding_proxy_batch_size
  {bench} bench --requests 2000 --concurrency 64

Ctrl-C stops {what}.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8000, help="proxy port (default 8000)")
    p.add_argument("--upstream", help="a running TEI; without it the simulator is started")
    p.add_argument("--simulator-port", type=int, default=8080, help="simulator port")


def _wait_until_up(url: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def demo(args: argparse.Namespace) -> int:
    from .serve import run, serve

    simulator: subprocess.Popen[bytes] | None = None
    upstream = args.upstream
    if upstream is None:
        upstream = f"http://127.0.0.1:{args.simulator_port}"
        simulator = subprocess.Popen(
            [sys.executable, "-m", "embedding_proxy.simulator", "--port", str(args.simulator_port)]
        )
        if not _wait_until_up(upstream + "/health", 15):
            simulator.terminate()
            print(
                f"embedding-proxy demo: the simulator did not start on {upstream}", file=sys.stderr
            )
            return 1
    config = load(
        flags={"server": {"port": args.port, "host": "127.0.0.1"}, "upstream": {"url": upstream}}
    )
    bench = os.path.join(os.path.dirname(sys.executable), "embedding-proxy")

    def started() -> None:
        print(
            CURL.format(
                port=args.port,
                upstream=upstream,
                sim_note=" (the built-in TEI simulator: not a real model)" if simulator else "",
                bench=bench,
                what="the proxy and the simulator" if simulator else "the proxy",
            ),
            flush=True,
        )

    try:
        run(lambda: serve(config, started=started))
    finally:
        if simulator is not None:
            simulator.terminate()
            simulator.wait(10)
    return 0
