"""Deterministic vectors: the same input always gets the same vector, different inputs differ.

A vector is one of 64 fixed random unit vectors ("bases"), with the sign of every component
flipped by bits drawn from a hash of the input. Distinct inputs get distinct sign patterns (768
random bits), so a test can tell exactly whose vector a caller received. Building one costs a hash
and a few C-level byte operations, so the simulator stays cheap on a machine it shares with the
proxy under test.

Values are float32, as TEI's are. `embedding()` returns them as Python floats holding the float32
values exactly; the simulator prints those floats in full, so a JSON round trip gives back the same
numbers (`embedding(text) == response.json()[0]`).

- `normalize=False` gives the "raw pooled" vector: the base (components of magnitude 0.05 to 1)
  with the same signs, scaled by a per-input factor in [4, 12), so its norm is far from 1.
- `dimensions=d` (Matryoshka) keeps the first d components; with `normalize` they are rescaled to
  unit length again, as TEI truncates first and normalises after.
"""

from __future__ import annotations

import functools
import hashlib
import math
from array import array
from typing import Any

from .tokens import ids_key, text_key

MODEL_DIMENSIONS = 768
_BASES = 64
# Maps a random byte to a float32 sign-bit mask for the byte that holds the sign.
_SIGN_BIT = bytes(0x80 if b & 1 else 0 for b in range(256))


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
def _prefix(base: int, model_dimensions: int, dimensions: int, normalize: bool) -> int:
    """The first `dimensions` components of a base as little-endian float32, as an int to XOR."""
    values = _bases(model_dimensions)[base][:dimensions]
    norm = math.hypot(*values) if normalize else 1.0
    raw = array("f", [v / norm for v in values]).tobytes() if norm else b""
    return int.from_bytes(raw, "little")


def vector_bytes(
    key: bytes,
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> bytes:
    """The vector for `key` as little-endian float32 bytes (what OpenAI's base64 carries)."""
    d = model_dimensions if dimensions is None else min(dimensions, model_dimensions)
    digest = hashlib.shake_256(key).digest(3 + model_dimensions)
    mask = bytearray(4 * d)
    mask[3::4] = digest[3 : 3 + d].translate(_SIGN_BIT)
    prefix = _prefix(digest[0] % _BASES, model_dimensions, d, normalize)
    out = (prefix ^ int.from_bytes(mask, "little")).to_bytes(4 * d, "little")
    if normalize:
        return out
    scale = 4.0 + 8.0 * int.from_bytes(digest[1:3], "little") / 65536
    return array("f", [x * scale for x in array("f", out)]).tobytes()


def vector_from_key(
    key: bytes,
    *,
    normalize: bool = True,
    dimensions: int | None = None,
    model_dimensions: int = MODEL_DIMENSIONS,
) -> list[float]:
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
    """The exact vector the simulator answers for `text` (a string, or a list of token ids).

    For an input the simulator had to truncate, the vector is that of the words it kept.
    """
    return vector_from_key(
        input_key(text),
        normalize=normalize,
        dimensions=dimensions,
        model_dimensions=model_dimensions,
    )


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
