"""Deterministic vectors: the same input always gets the same vector, different inputs differ.

A vector is one of 64 fixed random unit vectors ("bases"), with the sign of every component
flipped by bits drawn from a hash of the input. Distinct inputs get distinct sign patterns (768
random bits), so a test can tell exactly whose vector a caller received. Building one costs a hash
and a few C-level byte operations, so the simulator stays cheap on a machine it shares with the
proxy under test.

Values are float32, as TEI's are, and the JSON answer writes each as TEI does (f32json.py): the
shortest decimal that reads back as the same float32. Those texts are worked out once per base
(`_texts`), so answering a vector only picks, component by component, the text with or without a
minus sign. `embedding()` returns what a JSON reader gets from that answer.

- `normalize=False` gives the "raw pooled" vector: the base (components of magnitude 0.05 to 1)
  with the same signs, times 4 or 8 for the input (a power of two, so the values stay exact), so its
  norm is far from 1.
- `dimensions=d` (Matryoshka) keeps the first d components; with `normalize` they are rescaled to
  unit length again, as TEI truncates first and normalises after.
"""

from __future__ import annotations

import functools
import hashlib
import math
from array import array
from typing import Any

import orjson

from . import f32json
from .tokens import ids_key, text_key

MODEL_DIMENSIONS = 768
_BASES = 64
# Maps a random byte to a float32 sign-bit mask for the byte that holds the sign.
_SIGN_BIT = bytes(0x80 if b & 1 else 0 for b in range(256))
_LOW_BIT = bytes(b & 1 for b in range(256))


def input_key(value: str | list[int]) -> bytes:
    """The bytes a vector is derived from, for a text or a list of token ids."""
    return text_key(value) if isinstance(value, str) else ids_key(value)


@functools.lru_cache(maxsize=8)
def _bases(model_dimensions: int) -> tuple[tuple[float, ...], ...]:
    bases = []
    for k in range(_BASES):
        raw = hashlib.shake_256(b"tei-simulator-base-%d" % k).digest(2 * model_dimensions)
        # Magnitudes in [0.05, 1): varied, never zero, signs left to the per-input mask.
        values = [
            0.05 + 0.95 * int.from_bytes(raw[i : i + 2], "little") / 65536
            for i in range(0, 2 * model_dimensions, 2)
        ]
        bases.append(tuple(values))
    return tuple(bases)


@functools.lru_cache(maxsize=1024)
def _magnitudes(base: int, model_dimensions: int, dimensions: int, scale: float) -> bytes:
    """The first `dimensions` components of a base as little-endian float32: unit length when
    `scale` is 0, else the raw base times `scale`."""
    values = _bases(model_dimensions)[base][:dimensions]
    if scale == 0:
        norm = math.hypot(*values)
        return array("f", [v / norm for v in values]).tobytes()
    raw = array("f", values)  # rounded to float32 first: times a power of two stays exact
    return array("f", [v * scale for v in raw]).tobytes()


@functools.lru_cache(maxsize=512)
def _texts(
    base: int, model_dimensions: int, dimensions: int, scale: float
) -> tuple[tuple[bytes, bytes], ...]:
    """Each component's JSON text, positive and negative (about 5 ms per base, once)."""
    magnitudes = array("f", _magnitudes(base, model_dimensions, dimensions, scale)).tolist()
    return tuple((t, b"-" + t) for t in f32json.texts(magnitudes))


def _choose(digest: bytes, normalize: bool) -> tuple[int, float]:
    """The base and the scale (0: unit length) an input's digest picks."""
    return digest[0] % _BASES, 0.0 if normalize else (4.0 if digest[1] & 1 else 8.0)


def _digest(key: bytes, model_dimensions: int) -> bytes:
    return hashlib.shake_256(key).digest(3 + model_dimensions)


def _dims(dimensions: int | None, model_dimensions: int) -> int:
    return model_dimensions if dimensions is None else min(dimensions, model_dimensions)


def vector_bytes(
    key: bytes,
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> bytes:
    """The vector for `key` as little-endian float32 bytes (what OpenAI's base64 carries)."""
    d = _dims(dimensions, model_dimensions)
    digest = _digest(key, model_dimensions)
    mask = bytearray(4 * d)
    mask[3::4] = digest[3 : 3 + d].translate(_SIGN_BIT)
    base, scale = _choose(digest, normalize)
    magnitudes = _magnitudes(base, model_dimensions, d, scale)
    out = int.from_bytes(magnitudes, "little") ^ int.from_bytes(mask, "little")
    return out.to_bytes(4 * d, "little")


def vector_json(
    key: bytes,
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> bytes:
    """The vector for `key` as TEI writes it in JSON."""
    d = _dims(dimensions, model_dimensions)
    digest = _digest(key, model_dimensions)
    base, scale = _choose(digest, normalize)
    texts = _texts(base, model_dimensions, d, scale)
    signs = digest[3 : 3 + d].translate(_LOW_BIT)
    return b"[" + b",".join([pair[sign] for pair, sign in zip(texts, signs, strict=True)]) + b"]"


def vector_from_key(
    key: bytes,
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> list[float]:
    """The vector's float32 values, exactly (for arithmetic on it, such as /similarity)."""
    raw = vector_bytes(
        key, normalize=normalize, dimensions=dimensions, model_dimensions=model_dimensions
    )
    return array("f", raw).tolist()


def embedding(
    text: str | list[int],
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> list[float]:
    """The vector the simulator answers for `text` (a string, or a list of token ids), as a JSON
    reader gets it: `embedding(text) == response.json()[0]`. Each value reads back as the float32
    the simulator computed (`array("f", embedding(text))` holds them exactly).

    For an input the simulator had to truncate, the vector is that of the words it kept.
    """
    body = vector_json(
        input_key(text),
        normalize=normalize,
        dimensions=dimensions,
        model_dimensions=model_dimensions,
    )
    return orjson.loads(body)


def model_vector(pooled: Any, normalize: bool, dimensions: int | None) -> Any:
    """A pooled float32 vector from a real forward pass (a numpy array), as TEI answers it: the
    first `dimensions` components, then normalised to unit length."""
    vector = pooled[:dimensions] if dimensions else pooled
    if normalize:
        norm = float((vector * vector).sum()) ** 0.5
        vector = vector / max(norm, 1e-12)
    return vector.astype("<f4")


def unit_score(key: bytes, salt: bytes = b"") -> float:
    """A deterministic number in [0, 1) for `key` (classifier logits, sparse weights)."""
    digest = hashlib.blake2b(key + salt, digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64
