"""scripts/bootstrap picks a Python that is recent enough, says why it cannot, and does not trust
a broken .venv. Run with --dry-run (which decides exactly as a real run does, and changes
nothing) against fake Pythons, so that no package is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OLD_PYTHON = """#!/bin/sh
# Answers like Python 3.10 to the two questions bootstrap asks.
case "$*" in *'print('*) echo 3.10.12; exit 0;; esac
exit 1
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the script in a tree of its own, and a bin/ with only what it needs."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap", tmp_path / "scripts" / "bootstrap")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "cut"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    old = bin_dir / "python3"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    return tmp_path


def bootstrap(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": str(tree / "bin"), "HOME": str(tree), **env}
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(tree / "scripts" / "bootstrap"), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_too_old_a_python_stops_at_once_with_one_line(tree: Path) -> None:
    result = bootstrap(tree, "--dry-run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bootstrap: the project needs Python 3.11 or later (python3 is 3.10.12); install one "
        "(e.g. apt-get install python3.11 python3.11-venv, or pyenv), or name it with "
        "PYTHON=/path/to/python3.11"
    ]
    assert not (tree / ".venv").exists()


def test_a_recent_python3_x_is_found_when_python3_is_too_old(tree: Path) -> None:
    (tree / "bin" / "python3.11").symlink_to(sys.executable)
    result = bootstrap(tree, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("bootstrap: using python3.11 (3.")
    assert "would create .venv" in result.stderr


def test_a_named_python_that_is_too_old_is_refused(tree: Path) -> None:
    result = bootstrap(tree, "--dry-run", PYTHON=str(tree / "bin" / "python3"))
    assert result.returncode == 1
    assert "is 3.10.12, but the project needs Python 3.11 or later" in result.stderr


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda venv: (venv / "bin").mkdir(parents=True), "half made"),
        (
            lambda venv: (
                (venv / "bin").mkdir(parents=True),
                (venv / "pyvenv.cfg").write_text("home = /gone\n"),
                (venv / "bin" / "python").symlink_to(venv.parent / "bin" / "python3"),
            ),
            "on Python 3.10.12, too old or gone",
        ),
        (
            lambda venv: (
                (venv / "bin").mkdir(parents=True),
                (venv / "pyvenv.cfg").write_text("home = /gone\n"),
                (venv / "bin" / "python").symlink_to("/gone/python3.11"),
            ),
            "half made",
        ),
    ],
    ids=["no pyvenv.cfg", "old python", "python gone"],
)
def test_a_broken_venv_is_made_again(tree: Path, make, why: str) -> None:  # type: ignore[no-untyped-def]
    make(tree / ".venv")
    result = bootstrap(tree, "--dry-run", PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    assert f"would make .venv again: it is {why}" in result.stderr


def fake_venv(venv: Path, pip_runs: bool) -> None:
    """A .venv whose python answers as 3.12 would, with a pip that runs or not."""
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        "case \"$*\" in *'print('*) echo 3.12.1; exit 0;; *version_info*) exit 0;; esac\n"
        f"exit {0 if pip_runs else 1}\n"
    )
    python.chmod(0o755)


def test_a_venv_whose_pip_fails_is_made_again(tree: Path) -> None:
    fake_venv(tree / ".venv", pip_runs=False)
    result = bootstrap(tree, "--dry-run", PYTHON=sys.executable)
    assert "would make .venv again: it is its pip does not run" in result.stderr


def test_a_working_venv_is_reused(tree: Path) -> None:
    result = bootstrap(tree, "--dry-run", PYTHON=sys.executable)
    assert "would create .venv" in result.stderr
    fake_venv(tree / ".venv", pip_runs=True)
    result = bootstrap(tree, "--dry-run", PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    assert "would reuse .venv" in result.stderr
    assert set(os.listdir(tree / ".venv")) == {"bin", "pyvenv.cfg"}  # a dry run changes nothing
