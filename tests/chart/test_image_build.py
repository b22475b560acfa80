"""The Dockerfile's two images, and clean environments built the way it builds them (no container
engine or registry here): the base pinned by digest, every lock line hashed and installed with
--require-hashes --no-deps, no pip or setuptools in a runtime venv, and none of the operator's
dependencies in the sidecar's."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from embedding_proxy import __version__
from embedding_proxy_operator.model import names

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "sidecar": ROOT / "requirements.lock",
    "operator": ROOT / "requirements-operator.lock",
    "build": ROOT / "requirements-build.lock",
}
# What only the operator imports: none of it may reach the sidecar image.
OPERATOR_ONLY = {"kopf", "kubernetes", "cryptography", "jsonpatch"}
# What a runtime venv must not hold: installers and build tools, unused at run time.
BUILD_TOOLS = {"pip", "setuptools", "wheel"}
DIGEST = re.compile(r"^(?P<image>[^@\s]+)@sha256:[0-9a-f]{64}$")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


class Stage:
    def __init__(self, base: str, name: str | None, comments: list[str]) -> None:
        self.base, self.name, self.comments = base, name, comments
        self.steps: list[tuple[str, str]] = []

    def args(self, word: str) -> list[str]:
        return [args for w, args in self.steps if w == word]


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name, in order."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, Stage] = {}
    comments: list[str] = []
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            comments.append(line)
            continue
        if not line:
            comments = []
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), " ".join(rest.split())
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            current = found[name] = Stage(parts[0], name or None, comments)
        elif current is not None:
            current.steps.append((word, rest))
        comments = []
    return found


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from a lock in pip's requirements format."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        pin = PIN.match(requirement)
        assert pin, f"{path.name}: not pinned with ==: {line}"
        bad = [o for o in options if not HASH.match(o)]
        assert options and not bad, f"{path.name}: {requirement} needs sha256 hashes only: {bad}"
        entries[canonicalize_name(pin["name"])] = (pin["version"], options)
    return entries


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_base_image_is_pinned_by_digest_in_one_place() -> None:
    found = stages()
    external = [s for s in found.values() if s.base not in found]
    assert len(external) == 1, [s.base for s in external]
    (base,) = external
    pinned = DIGEST.match(base.base)
    assert pinned, f"FROM {base.base}: pin the base by digest (image@sha256:...)"
    # A comment above it names the tag the digest was read from.
    assert any(pinned["image"] in c for c in base.comments), base.comments
    # Every other stage starts from a stage of the Dockerfile, so the pin holds for all.
    assert all(s.base in found for s in found.values() if s is not base)


def test_every_lock_line_is_pinned_and_hashed() -> None:
    for path in LOCKS.values():
        entries = lock_entries(path)
        assert entries, path.name


def test_lock_parser_refuses_what_pip_would_not_check(tmp_path: Path) -> None:
    hashed = "--hash=sha256:" + "0" * 64
    for text in (f"idna>=3 {hashed}\n", "idna==3.21\n", f"idna==3.21 --hash=md5:{'0' * 32}\n"):
        lock = tmp_path / "x.lock"
        lock.write_text(text)
        with pytest.raises(AssertionError):
            lock_entries(lock)


def test_sidecar_lock_has_none_of_the_operators_packages() -> None:
    sidecar, operator = lock_entries(LOCKS["sidecar"]), lock_entries(LOCKS["operator"])
    assert operator.keys() >= OPERATOR_ONLY
    assert not OPERATOR_ONLY & sidecar.keys()
    assert not BUILD_TOOLS & (sidecar.keys() | operator.keys())
    # The operator's image runs the same proxy code: the packages both hold agree.
    for name, (version, _) in sidecar.items():
        assert operator[name][0] == version, f"{name}: {version} vs {operator[name][0]}"
    # And the proxy's own dependencies name none of them either.
    proxy = {canonicalize_name(Requirement(s).name) for s in project()["project"]["dependencies"]}
    assert not proxy & OPERATOR_ONLY


@pytest.mark.parametrize(
    ("lock", "extras"), [("sidecar", []), ("operator", ["operator"])], ids=["sidecar", "operator"]
)
def test_lock_pins_every_dependency_in_range(lock: str, extras: list[str]) -> None:
    pins = lock_entries(LOCKS[lock])
    meta = project()["project"]
    specs = [*meta["dependencies"]]
    for extra in extras:
        specs += meta["optional-dependencies"][extra]
    for spec in specs:
        requirement = Requirement(spec)
        if requirement.marker and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{name} is missing from {LOCKS[lock].name}: run scripts/lock-requirements"
        )
        assert requirement.specifier.contains(pins[name][0]), (
            f"{LOCKS[lock].name} pins {name}=={pins[name][0]}, outside {requirement.specifier}: "
            "run scripts/lock-requirements"
        )


def test_the_build_backend_is_pinned_by_the_build_lock() -> None:
    pins = lock_entries(LOCKS["build"])
    assert pins.keys() == {"pip", "setuptools"}
    for spec in project()["build-system"]["requires"]:
        requirement = Requirement(spec)
        version = pins[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version), (requirement, version)


def pip_runs(stage: Stage) -> list[str]:
    return [r for r in stage.args("RUN") if "pip" in r]


def test_dockerfile_installs_only_from_the_locks_into_venvs_without_pip() -> None:
    found = stages()
    build = found["build"]
    runs = " && ".join(build.args("RUN"))
    assert "--require-hashes --no-deps -r requirements-build.lock" in runs
    assert "--no-deps --no-build-isolation" in runs, "the wheel is built with the pinned backend"
    for venv, lock in (
        ("sidecar-venv", "requirements.lock"),
        ("operator-venv", LOCKS["operator"].name),
    ):
        runs = " ".join(found[venv].args("RUN"))
        assert found[venv].base == "build"
        assert "python -m venv --without-pip /opt/venv" in runs
        assert re.search(rf"install --require-hashes --no-deps .*-r {re.escape(lock)}\b", runs)
        # Each install is either from the lock with hashes, or the project's own wheel offline.
        for command in runs.split("&&"):
            if " install " in command:
                assert "--require-hashes" in command or "--no-index /wheels/" in command, command
        assert [a for a in found[venv].args("COPY")] == [lock + " ./"]
    # The runtime images take the venv alone from their build stage.
    for image, venv in (("sidecar", "sidecar-venv"), ("operator", "operator-venv")):
        stage = found[image]
        assert stage.base == "runtime"
        assert stage.args("COPY") == [f"--from={venv} /opt/venv /opt/venv"]
        assert not pip_runs(stage)


def test_the_sidecar_is_the_default_target_and_both_run_unprivileged() -> None:
    found = stages()
    last = list(found.values())[-1]
    assert last.name == "sidecar"
    runtime = dict(found["runtime"].steps)
    user = runtime["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER must be a numeric non-root uid"
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    assert "HOME=/home/app" in runtime["ENV"]
    assert "mkdir -p /home/app" in runtime["RUN"]
    sidecar, operator = dict(last.steps), dict(found["operator"].steps)
    # Exec form: the process is PID 1 and receives SIGTERM itself.
    assert json.loads(sidecar["ENTRYPOINT"]) == ["embedding-proxy"]
    assert json.loads(sidecar["CMD"]) == ["serve"]
    assert json.loads(operator["ENTRYPOINT"]) == ["embedding-proxy-operator"]
    # Only the API port: metrics have a port of their own only when server.metrics_port is set.
    assert last.args("EXPOSE") == ["8000"]


def test_image_user_is_the_one_the_operator_and_chart_run_as() -> None:
    # runAsNonRoot checks the image's numeric USER; runAsUser in the sidecar and the chart must
    # name the same uid, or the read-only mounts and the venv would belong to someone else.
    uid, gid = (int(x) for x in dict(stages()["runtime"].steps)["USER"].split(":"))
    assert uid == gid == names.SIDECAR_UID
    values = yaml.safe_load((ROOT / "charts" / "embedding-proxy" / "values.yaml").read_text())
    pod = values["operator"]["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)


def copied_sources() -> list[str]:
    sources: list[str] = []
    for stage in stages().values():
        for args in stage.args("COPY"):
            parts = shlex.split(args)
            if not any(p.startswith("--from") for p in parts):
                sources += [p.removeprefix("./").rstrip("/") for p in parts[:-1]]
    return sources


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    allowed = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = copied_sources()
    assert {p.name for p in LOCKS.values()} <= set(sources)
    for source in sources:
        assert source in allowed, f".dockerignore excludes {source}, which the Dockerfile copies"


def test_image_labels_say_what_the_images_are() -> None:
    found = stages()

    def labels(stage: Stage) -> dict[str, str]:
        return dict(
            item.split("=", 1) for args in stage.args("LABEL") for item in shlex.split(args)
        )

    meta = project()["project"]
    runtime = labels(found["runtime"])
    args = dict(a.split("=", 1) for a in found["runtime"].args("ARG"))
    assert args["VERSION"] == meta["version"]
    assert runtime["org.opencontainers.image.licenses"] == meta["license"]
    # Filled by the build (scripts/build-images: git), never a made-up default.
    assert runtime["org.opencontainers.image.revision"] == "${REVISION}"
    assert runtime["org.opencontainers.image.source"] == "${SOURCE}"
    assert labels(found["sidecar"])["org.opencontainers.image.title"] == meta["name"]
    assert labels(found["operator"])["org.opencontainers.image.title"] == meta["name"] + "-operator"


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


PIP = [sys.executable, "-m", "pip"]


def lock_venv(request: pytest.FixtureRequest, lock: Path) -> Path:
    """A venv made as the Dockerfile makes it: --without-pip, then the lock installed into it
    from outside with --require-hashes --no-deps. Kept in pytest's cache, keyed by the lock and
    the Python (a new lock makes a new one)."""
    key = hashlib.sha256(lock.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = Path(request.config.cache.mkdir(f"image-venv-{lock.stem}-{key}"))
    if not (venv / ".complete").exists():
        for old in venv.parent.glob(f"image-venv-{lock.stem}-*"):
            if old != venv:
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(venv)
        made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=ROOT)
        assert made.returncode == 0, made.stderr
        install = [*PIP, "--python", str(venv / "bin" / "python"), "install", "--quiet"]
        done = run(
            [*install, "--require-hashes", "--no-deps", "--only-binary", ":all:", "-r", str(lock)],
            cwd=ROOT,
            timeout=840,
        )
        assert done.returncode == 0, f"installing {lock.name}:\n{done.stderr}"
        (venv / ".complete").write_text(key)
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, from what the Dockerfile copies, built without an isolated build
    environment (the image builds it with the build lock's backend)."""
    src = tmp_path_factory.mktemp("src")
    for source in copied_sources():
        path = ROOT / source
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(path, src / source, ignore=ignore)
        elif source not in {p.name for p in LOCKS.values()}:
            shutil.copy2(path, src / source)
    out = src / "wheels"
    done = run(
        [*PIP, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."], src
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("*.whl")
    return built


def installed(venv: Path) -> set[str]:
    listed = run([*PIP, "--python", str(venv / "bin" / "python"), "list", "--format=json"], ROOT)
    assert listed.returncode == 0, listed.stderr
    return {canonicalize_name(p["name"]) for p in json.loads(listed.stdout)}


def with_project(venv: Path, wheel: Path) -> Path:
    python = str(venv / "bin" / "python")
    done = run([*PIP, "--python", python, "install", "--quiet", "--no-deps", "--force-reinstall",
                "--no-index", str(wheel)], ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked = run([*PIP, "--python", python, "check"], ROOT)
    assert checked.returncode == 0, f"the lock is inconsistent:\n{checked.stdout}"
    return venv


# The first run on a machine installs each lock (see lock_venv); later ones take seconds.
@pytest.mark.timeout(900)
def test_sidecar_venv_built_like_the_image_runs_the_proxy_alone(
    request: pytest.FixtureRequest, wheel: Path, tmp_path: Path
) -> None:
    venv = with_project(lock_venv(request, LOCKS["sidecar"]), wheel)
    present = installed(venv)
    assert not present & (OPERATOR_ONLY | BUILD_TOOLS), present & (OPERATOR_ONLY | BUILD_TOOLS)
    python = str(venv / "bin" / "python")
    # Every module of the proxy imports without the operator's packages; only the optional
    # extras' modules (bench --plot, the simulator's torch backend) may miss theirs.
    extras = {"matplotlib", "torch", "transformers"}
    walk = (
        "import importlib, json, pkgutil, sys, embedding_proxy as p\n"
        "missing = {}\n"
        "mods = [m.name for m in pkgutil.walk_packages(p.__path__, 'embedding_proxy.')]\n"
        "for m in mods:\n"
        "    try: importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e: missing[m] = e.name\n"
        f"leaked = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(OPERATOR_ONLY)!r})\n"
        "print(json.dumps([len(mods), missing, leaked]))"
    )
    imported = run([python, "-c", walk], cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    count, missing, leaked = json.loads(imported.stdout)
    assert count > 30 and leaked == [], imported.stdout
    assert set(missing.values()) <= extras, missing
    check_command(venv, "embedding-proxy", tmp_path)


@pytest.mark.timeout(900)
def test_operator_venv_built_like_the_image_runs_both_commands(
    request: pytest.FixtureRequest, wheel: Path, tmp_path: Path
) -> None:
    venv = with_project(lock_venv(request, LOCKS["operator"]), wheel)
    present = installed(venv)
    assert present >= OPERATOR_ONLY and not present & BUILD_TOOLS
    for command in ("embedding-proxy", "embedding-proxy-operator"):
        check_command(venv, command, tmp_path)


def check_command(venv: Path, command: str, cwd: Path) -> None:
    result = run([str(venv / "bin" / command), "--help"], cwd=cwd, timeout=60)
    assert result.returncode == 0, f"{command} --help:\n{result.stderr}"
    assert "usage" in result.stdout.lower(), result.stdout
    version = run([str(venv / "bin" / command), "--version"], cwd=cwd, timeout=60)
    assert version.stdout.startswith(f"{command} {__version__}"), version.stdout + version.stderr
    where_from = "import embedding_proxy; print(embedding_proxy.__file__)"
    where = run([str(venv / "bin" / "python"), "-c", where_from], cwd)
    # The installed copy runs, not the work tree.
    assert where.stdout.startswith(str(venv)), where.stdout


@pytest.mark.parametrize(
    "script", ["lock-requirements", "render-manifests", "install-test-tools", "build-images"]
)
def test_scripts_are_executable(script: str) -> None:
    assert os.access(ROOT / "scripts" / script, os.X_OK)
