"""Real helm for the tests: from PATH, or where scripts/fetch-k8s-tools puts it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def find_helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


def require_helm() -> str:
    """helm, or a failure in CI (where it must be there) and a skip elsewhere."""
    found = find_helm()
    if found:
        return found
    message = "helm not found on PATH or in .tools/bin: run scripts/fetch-k8s-tools"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(command: str, install: str) -> str:
    """A system tool from PATH, or a failure in CI (where scripts/install-test-tools put it) and
    a skip elsewhere; `install` says how to get it."""
    found = shutil.which(command)
    if found:
        return found
    message = f"{command} not found on PATH: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def helm_template(*flags: str, namespace: str) -> list[dict[str, Any]]:
    """The chart rendered by real helm with the given flags, as a list of objects."""
    done = subprocess.run(
        [
            require_helm(),
            "template",
            "ep",
            str(ROOT / "charts" / "embedding-proxy"),
            "--namespace",
            namespace,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def require_torch() -> None:
    """torch and transformers (the simulator's torch backend), or a failure in CI (where
    scripts/bootstrap --test installs them) and a skip elsewhere."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed: run scripts/bootstrap --test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
