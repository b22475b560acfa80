"""`python -m embedding_proxy.simulator`: the same as `embedding-proxy simulate-tei`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from ..failure import Failure
from . import add_arguments, run, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="embedding-proxy simulate-tei",
        description="A TEI stand-in with a modelled GPU (not a real model).",
    )
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        run(settings)
    except Failure as e:
        print(f"embedding-proxy simulate-tei: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
