"""Real helm for the tests: from PATH, or where scripts/fetch-k8s-tools puts it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
