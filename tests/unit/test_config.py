from __future__ import annotations

from pathlib import Path

import pytest

from embedding_proxy.config import ConfigError, load, redact


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("batching:\n  max_batch_size: 10\n  max_wait_ms: 7\nversion: abc\n")
    env = {"EMBEDDING_PROXY_BATCHING__MAX_WAIT_MS": "9", "EMBEDDING_PROXY_SERVER__PORT": "9001"}
    config = load(f, {"server": {"port": 9002}}, env)
    assert config.batching.max_batch_size == 10  # file
    assert config.batching.max_wait_ms == 9  # env over file
    assert config.server.port == 9002  # flags over env
    assert config.batching.max_concurrency == 4  # default
    assert config.version == "abc"


def test_config_path_from_env_and_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[upstream]\nurl = 'http://tei:3000'\n")
    config = load(None, None, {"EMBEDDING_PROXY_CONFIG": str(f)})
    assert config.upstream.url == "http://tei:3000"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("batching:\n  max_batch_size: 0\n", {}, "batching.max_batch_size"),
        ("batching:\n  max_batch_sise: 3\n", {}, "batching.max_batch_sise: unknown setting"),
        ("", {"EMBEDDING_PROXY_BATCHING__FLUSH_MODE": "eager"}, "batching.flush_mode"),
        ("upstream:\n  url: tei:80\n", {}, "upstream"),
        ("- a list\n", {}, "must hold a mapping"),
        ("batching: [\n", {}, "not valid"),
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(f, None, env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load(tmp_path / "nope.yaml", None, {})


def test_redact_masks_url_credentials_and_query_values_only() -> None:
    text = "upstream http://u:pw@h:1/p?api_key=s3cret&x=1#f not answering; a?b=c stays"
    assert redact(text) == (
        "upstream http://***@h:1/p?api_key=***&x=***#f not answering; a?b=c stays"
    )
