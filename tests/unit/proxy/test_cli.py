"""The command line: every setting has a flag that names its variable and default; --version."""

from __future__ import annotations

import argparse
import re
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from embedding_proxy import __version__, cli
from embedding_proxy.config import flags
from embedding_proxy.config.settings import Config
from embedding_proxy_operator import cli as operator_cli


def setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += setting_paths(field.annotation, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def serve_help() -> str:
    serve = cli.parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    return serve.format_help()


def load(*argv: str) -> Config:
    args = cli.parser().parse_args(["serve", *argv])
    return cli.load_config(args)


def test_every_setting_has_one_flag_naming_its_variable_and_default() -> None:
    text = serve_help()
    generated = flags.flags()
    assert sorted(".".join(f.path) for f in generated) == sorted(setting_paths(Config))
    assert len({f.option for f in generated}) == len(generated)
    for flag in generated:
        # The option, then its help: description, [env: ...], [default: ...] on lines of their own.
        block = re.search(
            rf"^  {re.escape(flag.option)}[ ,].*?(?=^  --|\Z)", text, re.MULTILINE | re.DOTALL
        )
        assert block, flag.option
        assert f"[env: {flag.env}=]" in block.group(0), flag.option
        assert "[default: " in block.group(0), flag.option
        assert flag.field.description, f"{flag.option}: the setting has no description"


def test_enum_like_settings_list_their_choices() -> None:
    text = serve_help()
    assert "--flush-mode {adaptive,deadline}" in text
    assert "--log-level {debug,info,warning,error}" in text
    with pytest.raises(SystemExit) as info:
        cli.parser().parse_args(["serve", "--flush-mode", "eager"])
    assert info.value.code == 2


def test_serve_has_a_description() -> None:
    assert "coalesces concurrent requests" in serve_help()


# Flags used before they were generated, in README, docs, tests and bench: they must keep working.
LEGACY = [
    (["--host", "127.0.0.2"], lambda c: c.server.host == "127.0.0.2"),
    (["--port", "9001"], lambda c: c.server.port == 9001),
    (["--metrics-port", "9002"], lambda c: c.server.metrics_port == 9002),
    (["--upstream", "http://tei:3000"], lambda c: c.upstream.url == "http://tei:3000"),
    (["--max-batch-size", "7"], lambda c: c.batching.max_batch_size == 7),
    (["--max-wait-ms", "2.5"], lambda c: c.batching.max_wait_ms == 2.5),
    (["--max-concurrency", "3"], lambda c: c.batching.max_concurrency == 3),
    (["--queue-capacity", "11"], lambda c: c.batching.queue_capacity == 11),
    (["--flush-mode", "deadline"], lambda c: c.batching.flush_mode == "deadline"),
    (["--request-timeout-ms", "1234"], lambda c: c.server.request_timeout_ms == 1234),
    (["--drain-seconds", "1.5"], lambda c: c.server.drain_seconds == 1.5),
    (["--log-level", "warning"], lambda c: c.server.log_level == "warning"),
]


@pytest.mark.parametrize(("argv", "holds"), LEGACY, ids=[a[0] for a, _ in LEGACY])
def test_existing_flag_names_keep_working(argv: list[str], holds) -> None:  # type: ignore[no-untyped-def]
    assert holds(load(*argv))


def test_new_flags_reach_every_section() -> None:
    config = load(
        "--api-keys", "k1,k2",
        "--max-batch-tokens", "999",
        "--grace-seconds", "3",
        "--max-body-bytes", "4096",
        "--upstream-timeout-ms", "700",
        "--upstream-retry-max-attempts", "5",
        "--max-input-chars", "10",
        "--config-version", "v7",
    )  # fmt: skip
    assert config.auth.api_keys == ["k1", "k2"]
    assert config.batching.max_batch_tokens == 999
    assert config.server.grace_seconds == 3
    assert config.server.max_body_bytes == 4096
    assert config.upstream.timeout_ms == 700
    assert config.upstream.retry.max_attempts == 5
    assert config.limits.max_input_chars == 10
    assert config.version == "v7"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROXY_BATCHING__MAX_BATCH_SIZE", "5")
    monkeypatch.setenv("EMBEDDING_PROXY_BATCHING__MAX_CONCURRENCY", "6")
    config = load("--max-batch-size", "9")
    assert config.batching.max_batch_size == 9
    assert config.batching.max_concurrency == 6


class Inner(BaseModel):
    port: int = Field(1, description="inner port")
    verbose: bool = Field(False, description="talk more")


class Toy(BaseModel):
    version: str = Field("", description="label")
    a: Inner = Inner()
    b: Inner = Inner()
    mode: Literal["x", "y"] = Field("x", description="a mode")


def test_the_generator_keeps_names_apart_and_handles_booleans() -> None:
    options = {".".join(f.path): f.option for f in flags.flags(Toy)}
    assert options == {
        "version": "--config-version",
        "a.port": "--a-port",
        "a.verbose": "--a-verbose",
        "b.port": "--b-port",
        "b.verbose": "--b-verbose",
        "mode": "--mode",
    }
    p = argparse.ArgumentParser()
    flags.add_arguments(p, Toy)
    args = p.parse_args(["--a-verbose", "--no-b-verbose", "--b-port", "3", "--mode", "y"])
    assert flags.settings_of(args, Toy) == {
        "a": {"verbose": True},
        "b": {"verbose": False, "port": "3"},
        "mode": "y",
    }


def test_version_of_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"embedding-proxy {__version__}"
    operator_cli.main(["--version"])
    assert capsys.readouterr().out.startswith(f"embedding-proxy-operator {__version__} (kopf ")
