"""docker-compose.yml parses, per profile, as docker-compose reads it (no engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ["cpu", "gpu", "sim"]


@pytest.fixture(scope="module")
def compose() -> str:
    found = shutil.which("docker-compose")
    if not found:
        pytest.skip(
            "docker-compose is not installed and scripts/install-test-tools could not install it "
            "(it needs root and apt-get)"
        )
    return found


def config(compose: str, *args: str, cwd: Path = ROOT, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [compose, *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def active(services: dict[str, Any], profile: str) -> dict[str, Any]:
    """The services `--profile PROFILE up` starts: those with no profile or with this one."""
    return {n: s for n, s in services.items() if not s.get("profiles") or profile in s["profiles"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_runs_the_proxy_and_one_tei(compose: str, profile: str) -> None:
    services = config(compose, "--profile", profile)["services"]
    running = active(services, profile)
    assert sorted(running) == ["proxy", f"tei-{profile}"]
    tei = running[f"tei-{profile}"]
    assert tei["networks"]["default"]["aliases"] == ["tei"]
    proxy = running["proxy"]
    assert proxy["environment"]["EMBEDDING_PROXY_UPSTREAM__URL"] == "http://tei:80"
    assert proxy["environment"]["EMBEDDING_PROXY_SERVER__METRICS_PORT"] == "9464"
    assert proxy["read_only"] is True
    assert proxy["cap_drop"] == ["ALL"]
    published = {p["published"] for p in proxy["ports"]}
    assert {8000, 9464} <= {int(p) for p in published}


def test_gpu_profile_reserves_gpus_and_cpu_profile_does_not(compose: str) -> None:
    services = config(compose, "--profile", "gpu")["services"]
    (device,) = services["tei-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert device["driver"] == "nvidia"
    assert "deploy" not in services["tei-cpu"]
    assert "text-embeddings-inference:cpu-" in services["tei-cpu"]["image"]


def test_sim_profile_runs_the_builtin_simulator(compose: str) -> None:
    sim = config(compose, "--profile", "sim")["services"]["tei-sim"]
    assert sim["image"] == "embedding-proxy:0.1.0"
    assert sim["command"][:1] == ["simulate-tei"]
    assert sim["command"][sim["command"].index("--port") + 1] == "80"


def test_model_id_comes_from_the_environment(compose: str) -> None:
    services = config(compose, "--profile", "cpu", MODEL_ID="intfloat/e5-small-v2")["services"]
    assert services["tei-cpu"]["command"] == ["--model-id", "intfloat/e5-small-v2"]


def test_config_rejects_a_broken_file(compose: str, tmp_path: Path) -> None:
    # The checks above mean something only if docker-compose refuses what is wrong.
    text = (ROOT / "docker-compose.yml").read_text()
    (tmp_path / "docker-compose.yml").write_text(
        text.replace("    image: embedding", "    imag: x", 1)
    )
    result = subprocess.run(
        [compose, "config"], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "imag" in result.stderr


def test_commands_are_ones_the_cli_accepts() -> None:
    from embedding_proxy.cli import parser

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("proxy", "tei-sim"):
        args = parser().parse_args(services[name]["command"])
        assert args.command == services[name]["command"][0], name
