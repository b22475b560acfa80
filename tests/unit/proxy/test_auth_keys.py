"""The keys file: each line a key with its lane and weight; a key listed again cannot be lifted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from embedding_proxy.api.errors import ProxyError
from embedding_proxy.callers.auth import KeyStore
from embedding_proxy.config.settings import AuthConfig


def store(tmp_path: Path, text: str) -> KeyStore:
    path = tmp_path / "keys"
    path.write_text(text)
    return KeyStore(AuthConfig(api_keys_file=path))


def test_each_key_has_its_lane_and_weight(tmp_path: Path) -> None:
    keys = store(tmp_path, "top\nbulk lane=batch weight=3\n")
    assert keys.check("Bearer top").lane is None
    bulk = keys.check("Bearer bulk")
    assert (bulk.lane, bulk.weight) == ("batch", 3)
    with pytest.raises(ProxyError) as e:
        keys.check("Bearer other")
    assert e.value.status == 401


def test_a_key_listed_again_keeps_its_first_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        keys = store(tmp_path, "bulk lane=batch\nbulk\nbulk lane=interactive weight=9\n")
    grant = keys.check("Bearer bulk")
    assert (grant.lane, grant.weight) == ("batch", None)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'keys'}, key 2: listed before; its first line holds",
        f"{tmp_path / 'keys'}, key 3: listed before; its first line holds",
    ]
