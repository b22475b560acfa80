"""Expected failures: what went wrong, why, and what to do, in one line and an exit code.

Commands raise `Failure` for what a user can meet and fix (a busy port, an upstream that does not
answer); the command line prints it without a traceback. Tracebacks are for bugs.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable

from .config.settings import ConfigError


class Failure(Exception):
    def __init__(self, what: str, why: str, todo: str, code: int = 1) -> None:
        super().__init__(f"{what}: {why}; {todo}")
        self.code = code


def cannot_listen(host: str, port: int, error: OSError, flag: str = "--port") -> Failure:
    """Binding `host:port` failed with `error`."""
    # asyncio's message repeats the address; the system's own text for the code is enough.
    why = os.strerror(error.errno) if error.errno and error.errno > 0 else str(error)
    why = why[:1].lower() + why[1:]
    if error.errno == errno.EADDRINUSE:
        todo = f"another program is using it: stop that, or choose another port with {flag}"
    elif error.errno == errno.EACCES:
        todo = f"ports below 1024 need privileges: choose a higher one with {flag}"
    elif isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        todo = "use an address of this machine with --host (0.0.0.0: all of them)"
    else:
        todo = f"check --host and {flag}"
    return Failure(f"cannot listen on {host}:{port}", why, todo)


def exit_code(command: str, run: Callable[[], int]) -> int:
    """Run a command; an expected failure ends it with one line on stderr and its exit code
    (2 for a wrong setting, 130 for Ctrl-C). Used by worker processes too."""
    try:
        return run()
    except ConfigError as e:
        print(f"embedding-proxy: config error: {e}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"embedding-proxy {command}: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
