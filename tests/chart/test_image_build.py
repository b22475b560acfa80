"""The Dockerfile, and a clean environment built the way it builds the image (no engine here)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from embedding_proxy import __version__
from embedding_proxy_operator.model import names

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages, each a list of (INSTRUCTION, arguments)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: not pinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    build, final = instructions()
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert final[0] == ("FROM", "python:3.11-slim")
    runs = [args for word, args in build if word == "RUN"]
    assert "pip install -r requirements.lock" in runs
    assert runs.index("pip install -r requirements.lock") < runs.index("pip install --no-deps .")
    steps = dict(final)
    user = steps["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER must be a numeric non-root uid"
    assert steps["STOPSIGNAL"] == "SIGTERM"
    # Exec form: the process is PID 1 and receives SIGTERM itself.
    assert json.loads(steps["ENTRYPOINT"]) == ["embedding-proxy"]
    assert json.loads(steps["CMD"]) == ["serve"]


def test_image_user_is_the_one_the_operator_and_chart_run_as() -> None:
    # runAsNonRoot checks the image's numeric USER; runAsUser in the sidecar and the chart must
    # name the same uid, or the read-only mounts and the venv would belong to someone else.
    _, final = instructions()
    uid, gid = (int(x) for x in dict(final)["USER"].split(":"))
    assert uid == gid == names.SIDECAR_UID
    values = yaml.safe_load((ROOT / "charts" / "embedding-proxy" / "values.yaml").read_text())
    pod = values["operator"]["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for source in copied_sources():
        assert source in allowed, f".dockerignore excludes {source}, which the Dockerfile copies"


def copied_sources() -> list[str]:
    build = instructions()[0]
    sources: list[str] = []
    for word, args in build:
        if word == "COPY":
            parts = shlex.split(args)
            assert not any(p.startswith("--from") for p in parts)
            sources += [p.removeprefix("./").rstrip("/") for p in parts[:-1]]
    return sources


def test_lock_pins_every_runtime_dependency_in_range() -> None:
    pins = lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, (
            f"{name} is missing from requirements.lock: run scripts/lock-requirements"
        )
        assert requirement.specifier.contains(pins[name]), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement.specifier}: "
            "run scripts/lock-requirements"
        )


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


@pytest.fixture
def lock_venv(request: pytest.FixtureRequest) -> Path:
    """A venv with exactly requirements.lock installed, as the image's first pip step makes it.
    Installing every dependency takes minutes on a busy machine, so it is made once and kept in
    pytest's cache, keyed by the lock and the Python; a new lock makes a new one."""
    lock_text = (ROOT / "requirements.lock").read_bytes()
    key = hashlib.sha256(lock_text + sys.version.encode()).hexdigest()[:16]
    venv = Path(request.config.cache.mkdir(f"image-venv-{key}"))
    complete = venv / ".complete"
    if not complete.exists():
        for old in venv.parent.glob("image-venv-*"):
            if old != venv:
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(venv)
        created = run([sys.executable, "-m", "venv", str(venv)], cwd=ROOT)
        assert created.returncode == 0, created.stderr
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        result = run([*pip, "-r", str(ROOT / "requirements.lock")], cwd=ROOT, timeout=840)
        assert result.returncode == 0, f"pip install -r requirements.lock:\n{result.stderr}"
        complete.write_text(key)
    return venv


# The first run on a machine installs the whole lock (see lock_venv); later ones take seconds.
@pytest.mark.timeout(900)
def test_clean_venv_built_like_the_image_runs_both_entrypoints(
    tmp_path: Path, lock_venv: Path
) -> None:
    """COPY what the Dockerfile copies, install what it installs, run both commands."""
    src = tmp_path / "src"
    src.mkdir()
    for source in copied_sources():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(
                path, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(path, src / source)
    venv = lock_venv
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # The project itself, afresh each run, on top of the lock's dependencies.
    result = run([*pip, "--no-deps", "--force-reinstall", "."], cwd=src, timeout=300)
    assert result.returncode == 0, f"pip install --no-deps .:\n{result.stderr}"
    checked = run([str(venv / "bin" / "python"), "-m", "pip", "check"], cwd=tmp_path)
    assert checked.returncode == 0, f"the lock is inconsistent:\n{checked.stdout}"

    for command in ("embedding-proxy", "embedding-proxy-operator"):
        result = run([str(venv / "bin" / command), "--help"], cwd=tmp_path, timeout=60)
        assert result.returncode == 0, f"{command} --help:\n{result.stderr}"
        assert "usage" in result.stdout.lower(), result.stdout
        version = run([str(venv / "bin" / command), "--version"], cwd=tmp_path, timeout=60)
        assert version.stdout.startswith(f"{command} {__version__}"), (
            version.stdout + version.stderr
        )
    where = run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import embedding_proxy; print(embedding_proxy.__file__)",
        ],
        cwd=tmp_path,
    )
    # The installed copy runs, not the work tree.
    assert where.stdout.startswith(str(venv)), where.stdout


@pytest.mark.parametrize("script", ["lock-requirements", "render-manifests", "install-test-tools"])
def test_scripts_are_executable(script: str) -> None:
    assert os.access(ROOT / "scripts" / script, os.X_OK)


def test_image_labels_and_ports_say_what_the_image_is() -> None:
    _, final = instructions()
    labels = dict(
        item.split("=", 1) for word, args in final if word == "LABEL" for item in shlex.split(args)
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    args = dict(a.split("=", 1) for word, a in final if word == "ARG")
    assert args["VERSION"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.title"] == project["name"]
    head = [line.strip() for line in (ROOT / "LICENSE").read_text().splitlines()[:4]]
    assert head[1:4] == [
        "Apache License",
        "Version 2.0, January 2004",
        "http://www.apache.org/licenses/",
    ]
    # Only the API port: metrics have a port of their own only when server.metrics_port is set.
    assert [args for word, args in final if word == "EXPOSE"] == ["8000"]
