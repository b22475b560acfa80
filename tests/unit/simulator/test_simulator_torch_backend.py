"""The torch backend's parts that need no torch: ids from the simulator's tokenizer, settings."""

from __future__ import annotations

import argparse

import pytest

from embedding_proxy.simulator.errors import ErrorType, TeiError
from embedding_proxy.simulator.gpu import CostModel, Engine, Entry
from embedding_proxy.simulator.settings import (
    SimulatorSettings,
    add_arguments,
    settings_from_args,
)
from embedding_proxy.simulator.tokens import CLS_ID, SEP_ID, encode, encode_pair, token_id
from embedding_proxy.simulator.torch_backend import MODELS, input_ids


def test_a_pass_sees_exactly_the_tokens_the_cost_model_counts() -> None:
    text = encode("What is Deep Learning?", truncate=False, max_input_length=512)
    ids = input_ids(text)
    assert len(ids) == text.tokens == 6
    assert ids == [CLS_ID, *(token_id(w) for w in ["What", "is", "Deep", "Learning?"]), SEP_ID]

    pair = encode_pair("a query", "a text", truncate=False, direction="Right", max_input_length=9)
    assert len(input_ids(pair)) == pair.tokens == 7
    assert input_ids(pair)[0] == CLS_ID and input_ids(pair)[-2:] == [SEP_ID, SEP_ID]

    bare = encode([5, 70000, 12], truncate=False, max_input_length=512)
    assert input_ids(bare) == [5, 70000 % 30522, 12]  # ids as given, wrapped into the vocabulary
    prompted = encode([5, 6], truncate=False, max_input_length=512, prompt="query: ")
    assert len(input_ids(prompted)) == prompted.tokens == 5

    cut = encode("one two three four five", truncate=True, max_input_length=4)
    assert len(input_ids(cut)) == cut.tokens == 4


def test_the_model_decides_dimensions_and_longest_input() -> None:
    s = SimulatorSettings(
        backend="torch", model="minilm-l6", max_input_length=8192, max_batch_tokens=16384
    )
    assert s.dimensions == MODELS["minilm-l6"].hidden == 384
    assert s.max_input_length == 512
    assert s.model_id == "embedding-proxy/random-minilm-l6"
    assert SimulatorSettings(backend="torch", model_id="mine").model_id == "mine"
    with pytest.raises(ValueError, match="model must be one of"):
        SimulatorSettings(backend="torch", model="gpt-2")
    with pytest.raises(ValueError, match="backend must be one of"):
        SimulatorSettings(backend="onnx")


def test_dimensions_flag_is_refused_with_torch(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--backend", "torch", "--dimensions", "100"])
    with pytest.raises(SystemExit) as e:
        settings_from_args(args)
    assert e.value.code == 2 and "the model decides" in capsys.readouterr().err
    assert settings_from_args(parser.parse_args(["--dimensions", "100"])).dimensions == 100


class FailingEngine(Engine):
    async def forward(self, batch: list[Entry], tokens: int) -> list[None]:
        if any(e.tokens == 13 for e in batch):
            raise TeiError(ErrorType.BACKEND, "out of memory", prefixed=True)
        return [None] * len(batch)


async def test_a_failed_pass_fails_its_inputs_and_the_engine_goes_on() -> None:
    engine = FailingEngine(CostModel(), max_batch_tokens=16384, internal_batching=False)
    engine.start()
    try:
        (bad,) = engine.submit([13])
        with pytest.raises(TeiError) as e:
            await bad
        assert e.value.status == 424 and e.value.message == "Backend error: out of memory"
        (good,) = engine.submit([5])
        assert (await good).batch_size == 1
    finally:
        await engine.stop()
