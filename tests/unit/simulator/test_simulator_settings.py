"""The simulator's flags: TEI's names and defaults for the version simulated (router/src/main.rs,
router/src/lib.rs), and TEI's refusals at start."""

from __future__ import annotations

import argparse

import pytest

from embedding_proxy.simulator import SimulatorSettings, add_arguments, settings_from_args


def parse(*flags: str) -> SimulatorSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args(list(flags)))


def test_tei_1_9_defaults_and_1_8_on_request() -> None:
    s = parse()
    assert (s.tei_version, s.auto_truncate, s.before_1_9) == ("1.9.3", True, False)
    assert s.served_model_name == s.model_id and s.model_type == "embedding"
    old = parse("--tei-version", "1.8")
    assert (old.tei_version, old.auto_truncate, old.before_1_9) == ("1.8.3", False, True)


@pytest.mark.parametrize(
    ("flags", "auto_truncate"),
    [
        ((), True),
        (("--auto-truncate",), True),  # clap's default_missing_value
        (("--auto-truncate", "true"), True),
        (("--auto-truncate", "false"), False),
        (("--tei-version", "1.8"), False),
        (("--tei-version", "1.8", "--auto-truncate"), True),
    ],
)
def test_auto_truncate_takes_an_optional_boolean(
    flags: tuple[str, ...], auto_truncate: bool
) -> None:
    assert parse(*flags).auto_truncate is auto_truncate


def test_auto_truncate_clamps_the_input_length_and_without_it_tei_refuses_to_start() -> None:
    assert SimulatorSettings(max_input_length=1000, max_batch_tokens=100).max_input_length == 100
    with pytest.raises(ValueError, match="Either increase `--max-batch-tokens` to at least `1000`"):
        SimulatorSettings(max_input_length=1000, max_batch_tokens=100, auto_truncate=False)


def test_default_prompts() -> None:
    assert parse("--default-prompt-name", "query").default_prompt == "query: "
    assert parse("--default-prompt", "hi: ").default_prompt == "hi: "
    with pytest.raises(ValueError, match=r'Available prompts: \["passage", "query"\]'):
        SimulatorSettings(default_prompt_name="nope")
    with pytest.raises(ValueError, match="no prompts were found"):
        SimulatorSettings(default_prompt_name="query", prompts={})
    with pytest.raises(SystemExit):  # clap's conflicts_with: one or the other
        parse("--default-prompt", "a", "--default-prompt-name", "query")


def test_bad_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in (("--model-type", "llm"), ("--tei-version", "1.7"), ("--auto-truncate", "yes")):
        with pytest.raises(SystemExit) as e:
            parse(*flags)
        assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
