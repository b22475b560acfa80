"""float32 values in JSON as TEI writes them.

TEI answers with serde_json, which writes an `f32` with ryu's `format_finite` (serde_json's
`Formatter::write_f32`; ryu's `pretty::format32`): the shortest decimal that reads back as the same
float32, laid out as `0.001234`, `12.5`, `1.0` for 1e-6 <= |x| < 1e13 and as `1e-7`, `1.5e13`
beyond; zero is `0.0` (`-0.0`), and NaN and the infinities are `null`. A 768-dimension vector
takes about 9.4 KB so, where the float64 digits of the same values take 16 KB.

Where numpy is installed, orjson's own float32 writer prints those digits (`dumps`). Without it
(`dumps_pure`: the sidecar image has no numpy) they are found in four C-level passes, formatting
every value at 6, 7, 8 and 9 significant digits and keeping the first that reads back as the same
float32. Six digits are never too many: a normal float32 rounds from an interval narrower than
the gap between 6-digit decimals, so the 6-digit one that reads back, its trailing zeros dropped,
is the shortest. Where that reasoning fails (subnormals; powers of two, whose interval is
lopsided) values go through `_one`. orjson then lays the resulting doubles out; its float64
layout differs from ryu's float32 one only in the exponent's `+` and where each switches to
exponent form, which two substitutions put right.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import struct
from array import array
from collections.abc import Sequence
from typing import Any

import orjson

_F32 = struct.Struct("<f")
_TINY = 2.0**-126  # the smallest normal float32: below it, fewer digits can suffice
_POW2 = frozenset(s * math.ldexp(1.0, e) for e in range(-149, 128) for s in (1.0, -1.0))
_PASSES = tuple("%." + str(p - 1) + "e" for p in (6, 7, 8, 9))
# orjson's float64 layout goes to exponent form below 1e-5 (ryu's float32 one below 1e-6) and
# stays in decimal form up to 1e16 (ryu's float32 one up to 1e13).
_SMALL = re.compile(rb"(\d)(?:\.(\d+))?e-6(?!\d)")
_LARGE = re.compile(rb"(?<![\d.e])(\d)(\d{13,15})\.0(?!\d)")


def _reads_back(text: str, x: float) -> bool:
    try:
        return _F32.unpack(_F32.pack(float(text)))[0] == x
    except OverflowError:  # past the float32 range
        return False


def _one(x: float) -> float:
    """The shortest decimal that reads back as float32 `x`, as ryu finds it, one digit count at a
    time. Beside the nearest decimal of each length it tries the one on x's other side: the
    interval that rounds to x is lopsided at a power of two, and subnormals have few digits."""
    for p in range(1, 10):
        text = f"{x:.{p - 1}e}"
        if _reads_back(text, x):
            return float(text)
        mantissa, _, exponent = text.partition("e")
        digits = int(mantissa.replace(".", "")) + (1 if float(text) < x else -1)
        other = f"{digits}e{int(exponent) - p + 1}"
        if digits > 0 and _reads_back(other, x):
            return float(other)
    raise AssertionError(f"no decimal of 9 digits reads back as {x!r}")  # cannot happen


def shortest(values: Sequence[float]) -> list[float | None]:
    """For float32 values (exact, as Python floats), what a JSON reader gets from TEI: the
    shortest decimals that read back as each, as the nearest doubles. NaN and infinities: None."""
    exact = list(values)
    n = len(exact)
    found = []
    for fmt in _PASSES:
        cands = list(map(float, (",".join([fmt] * n) % tuple(exact)).split(","))) if n else []
        back = array("f", cands).tolist()
        found.append((cands, list(map(operator.eq, back, exact))))
    (c6, k6), (c7, k7), (c8, k8), (c9, _) = found
    out: list[float | None] = [
        a if ka else b if kb else c if kc else d
        for a, ka, b, kb, c, kc, d in zip(c6, k6, c7, k7, c8, k8, c9, strict=True)
    ]
    odd = set(_POW2.intersection(exact))
    if n and not (min(map(abs, exact)) >= _TINY and math.isfinite(math.fsum(exact))):
        odd.update(x for x in exact if not _TINY <= abs(x) < math.inf)
    if not odd:
        return out
    for i, x in enumerate(exact):
        if x in odd:
            out[i] = (
                None if not math.isfinite(x) else x if x == 0 else math.copysign(_one(abs(x)), x)
            )
    return out


def _small(m: re.Match[bytes]) -> bytes:
    return b"0.00000" + m[1] + (m[2] or b"")


def _large(m: re.Match[bytes]) -> bytes:
    fraction = m[2].rstrip(b"0")
    return m[1] + (b"." + fraction if fraction else b"") + b"e%d" % len(m[2])


def _layout(body: bytes) -> bytes:
    if b"e" in body:
        body = _SMALL.sub(_small, body.replace(b"e+", b"e"))
    return _LARGE.sub(_large, body)


@functools.cache
def _numpy() -> Any:
    """numpy when it is installed (with the test tools or torch; the sidecar image has none)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def dumps(values: Any) -> bytes:
    """A JSON array of float32 values as TEI writes it: `values` is a numpy float32 array or a
    sequence of floats holding float32 values exactly. With numpy, orjson's own float32 writer
    prints them (about 40 µs for 768 values); without it, `dumps_pure` (about 3 ms)."""
    np = None if hasattr(values, "dtype") else _numpy()
    if np is not None:
        values = np.asarray(values, dtype=np.float32)
    if hasattr(values, "dtype"):
        return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).replace(b"e+", b"e")
    return dumps_pure(values)


def dumps_pure(values: Sequence[float]) -> bytes:
    """`dumps` without numpy."""
    return _layout(orjson.dumps(shortest(values)))


def texts(values: Sequence[float]) -> list[bytes]:
    """Each float32 value as TEI writes it."""
    body = dumps(values)
    return body[1:-1].split(b",") if len(body) > 2 else []


def fragments(values: Sequence[float]) -> list[orjson.Fragment]:
    """Each float32 value as TEI writes it, to place inside a larger orjson document."""
    return [orjson.Fragment(text) for text in texts(values)]


def rounded(values: Sequence[float]) -> list[float]:
    """Python floats rounded to float32, as TEI computes them."""
    return array("f", values).tolist()
