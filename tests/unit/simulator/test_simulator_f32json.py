"""float32 values written as TEI writes them: serde_json's `write_f32`, which is ryu's
`format_finite` (the shortest decimal that reads back as the same float32, in ryu's layout), checked
against ryu's own output for edge values and 2,900 random bit patterns (tests/data/ryu-f32.txt)."""

from __future__ import annotations

import struct
from array import array
from pathlib import Path

import numpy as np
import orjson
import pytest

from embedding_proxy.simulator import f32json

RYU = Path(__file__).parents[2] / "data" / "ryu-f32.txt"


def ryu_cases() -> tuple[bytes, list[str]]:
    lines = [line.split() for line in RYU.read_text().splitlines() if not line.startswith("#")]
    raw = b"".join(struct.pack("<I", int(bits, 16)) for bits, _ in lines)
    return raw, [text for _, text in lines]


def test_every_value_is_written_as_ryu_writes_it_without_numpy() -> None:
    raw, want = ryu_cases()
    got = f32json.dumps_pure(array("f", raw).tolist())  # as in the sidecar image
    assert got.decode()[1:-1].split(",") == want


@pytest.mark.parametrize("given", ["numpy array", "list"])
def test_with_numpy_orjsons_float32_writer_writes_the_same(given: str) -> None:
    raw, want = ryu_cases()
    values = np.frombuffer(raw, dtype="<f4")
    got = f32json.dumps(values if given == "numpy array" else values.tolist())
    assert got.decode()[1:-1].split(",") == want


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-7, "1e-7"),  # exponent form below 1e-6, no padding
        (1.5e-6, "0.0000015"),  # float64's layout would say 1.5e-6
        (1e-5, "0.00001"),
        (0.1, "0.1"),  # the float32 nearest 0.1 is 0.100000001490116...
        (1.0, "1.0"),
        (1e12, "1000000000000.0"),
        (1e13, "1e13"),  # float64's layout would say 10000000000000.0
        (3.4028235e38, "3.4028235e38"),  # no `+` in the exponent
        (-0.0, "-0.0"),
        (float("nan"), "null"),
        (float("-inf"), "null"),
    ],
)
def test_edges(value: float, text: str) -> None:
    want = b"[" + text.encode() + b"]"
    values = f32json.rounded([value])
    assert f32json.dumps(values) == f32json.dumps_pure(values) == want


def test_a_json_reader_gets_back_the_same_float32_values() -> None:
    raw, _ = ryu_cases()
    exact = [x for x in array("f", raw).tolist() if x == x and abs(x) != float("inf")]
    read = orjson.loads(f32json.dumps(exact))
    assert read == f32json.shortest(exact)
    assert array("f", read).tobytes() == array("f", exact).tobytes()


def test_fragments_place_the_texts_in_a_document() -> None:
    doc = {"score": f32json.fragments(f32json.rounded([0.1]))[0], "text": "1e-6"}
    assert orjson.dumps(doc) == b'{"score":0.1,"text":"1e-6"}'
