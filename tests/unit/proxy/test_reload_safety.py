"""What a reload refuses (config/reload.py), and what a config error shows of a password that
breaks its URL; the same on a real process in tests/integration/test_config_safety.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedding_proxy.config.reload import ConfigWatcher, lowered
from embedding_proxy.config.settings import Config, ConfigError, load, validate

KEYED = validate({"auth": {"api_keys": ["k-0123456789"]}, "limits": {"rate_per_second": 5}})


@pytest.mark.parametrize("text", ["", "null\n", "---\n", "{}\n", "# a comment\n", "\n\n"])
def test_an_empty_document_is_refused(text: str, tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    applied: list[Config] = []
    results: list[bool] = []
    watcher = ConfigWatcher(
        path, lambda: load(path, environ={}), applied.append, results.append, lambda: KEYED
    )
    assert watcher.reload() is False
    assert (applied, results) == ([], [False])


@pytest.mark.parametrize(
    ("document", "refused"),
    [
        ({"batching": {"max_wait_ms": 2}}, "client keys off"),
        ({"auth": {}, "limits": {"rate_per_second": 5}}, "client keys off"),
        ({"auth": {"api_keys": []}}, "rate limit off"),
        ({"auth": {"api_keys": []}, "limits": {"rate_per_second": 0}}, None),
        ({"auth": {"api_keys": ["other-key-0123"]}, "limits": {"rate_burst": 3}}, "rate limit"),
        ({"auth": {"api_keys": ["other-key-0123"]}, "limits": {"rate_per_second": 1}}, None),
    ],
)
def test_a_protection_goes_off_only_when_the_file_says_so(
    document: dict, refused: str | None
) -> None:
    why = lowered(KEYED, validate(document), document)
    assert (why is None) if refused is None else (refused in str(why))


@pytest.mark.parametrize("password", ["pa#ss", "pa/ss", "pa?ss", "p@ss#word"])
def test_a_password_that_breaks_the_url_is_never_in_the_error(password: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate({"upstream": {"url": f"http://someone:{password}-SECRET@127.0.0.1:9"}})
    shown = str(error.value)
    assert "upstream.url" in shown
    for part in ("SECRET", "someone", "'pa'", password):
        assert part not in shown, shown
