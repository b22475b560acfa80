from __future__ import annotations

from pathlib import Path

import pytest

from embedding_proxy.config.redaction import redact
from embedding_proxy.config.settings import ConfigError, load


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("batching:\n  max_batch_size: 10\n  max_wait_ms: 7\nversion: abc\n")
    env = {"EMBEDDING_PROXY_BATCHING__MAX_WAIT_MS": "9", "EMBEDDING_PROXY_SERVER__PORT": "9001"}
    config = load(f, {"server": {"port": 9002}}, env)
    assert config.batching.max_batch_size == 10  # file
    assert config.batching.max_wait_ms == 9  # env over file
    assert config.server.port == 9002  # flags over env
    assert config.batching.max_concurrency == "auto"  # default
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


LANES = (
    "batching:\n  lanes:\n    - {name: fast, queue_capacity: 10}\n"
    "    - {name: slow, queue_capacity: 20, min_share: 0.2, weight: 3}\n"
)


def test_lanes_from_a_file_the_environment_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(LANES + "  default_lane: slow\n  signal_lanes: [fast]\n")
    assert load(f, None, {}).batching.default_lane == "slow"
    lanes = load(f, None, {}).batching.lane_list
    assert [(x.name, x.queue_capacity, x.min_share, x.weight) for x in lanes] == [
        ("fast", 10, 0.0, 1),
        ("slow", 20, 0.2, 3),
    ]
    env = {
        "EMBEDDING_PROXY_BATCHING__LANES": "a:5,b:6:0.5:2",
        "EMBEDDING_PROXY_BATCHING__DEFAULT_LANE": "b",
        "EMBEDDING_PROXY_BATCHING__SIGNAL_LANES": "a,b",
    }
    batching = load(None, None, env).batching
    assert [(x.name, x.queue_capacity, x.min_share, x.weight) for x in batching.lane_list] == [
        ("a", 5, 0.0, 1),
        ("b", 6, 0.5, 2),
    ]
    assert batching.signal_lanes == ["a", "b"]
    flags = {"batching": {"lanes": ["x:1"], "default_lane": "x"}}
    assert [x.name for x in load(None, flags, {}).batching.lane_list] == ["x"]


def test_lanes_without_interactive_and_no_default_lane_default_to_the_first(
    tmp_path: Path,
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(LANES)
    assert load(f, None, {}).batching.lane_default == "fast"
    f.write_text(LANES + "  default_lane: slow\n")
    assert load(f, None, {}).batching.lane_default == "slow"


def test_without_lanes_interactive_takes_the_queue_capacity_and_batch_a_tenth() -> None:
    batching = load(None, {"batching": {"queue_capacity": 77}}, {}).batching
    assert [(x.name, x.queue_capacity, x.min_share) for x in batching.lane_list] == [
        ("interactive", 77, 0.0),
        ("batch", 77, 0.1),
    ]
    assert batching.default_lane == "interactive" and batching.signal_lanes == []


@pytest.mark.parametrize(
    ("extra", "env", "needle"),
    [
        ("", {"EMBEDDING_PROXY_BATCHING__LANES": "a:1,a:2"}, "names must be unique"),
        ("", {"EMBEDDING_PROXY_BATCHING__LANES": "Fast:1"}, "batching.lanes.0.name"),
        ("", {"EMBEDDING_PROXY_BATCHING__LANES": "a:0"}, "batching.lanes.0.queue_capacity"),
        ("", {"EMBEDDING_PROXY_BATCHING__LANES": "a"}, "name:queue_capacity"),
        ("", {"EMBEDDING_PROXY_BATCHING__LANES": "a:1:0.5,b:1:0.5"}, "add up to more than 0.9"),
        ("  default_lane: nope\n", {}, "default_lane 'nope' is not one of the lanes"),
        ("  default_lane: fast\n  signal_lanes: [nope]\n", {}, "signal_lanes ['nope']"),
        ("", {"EMBEDDING_PROXY_AUTH__API_KEYS": "k1 lane=nope"}, "lane 'nope' is not one of"),
        ("", {"EMBEDDING_PROXY_AUTH__API_KEYS": "k1 weight=0"}, "weight=1..1000"),
        ("", {"EMBEDDING_PROXY_AUTH__API_KEYS": "k1 colour=red"}, "options, after it"),
        ("", {"EMBEDDING_PROXY_AUTH__API_KEYS": "k1 lane=fast lane=slow"}, "each once"),
    ],
)
def test_bad_lanes_name_the_setting(
    tmp_path: Path, extra: str, env: dict[str, str], needle: str
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(LANES + (extra or "  default_lane: fast\n"))
    with pytest.raises(ConfigError) as info:
        load(f, None, env)
    assert needle in str(info.value)
    assert "k1" not in str(info.value)  # a key is a secret, never quoted
