"""Kubernetes resource quantities ("500m", "1Gi", "1e3", 2) read as the API server reads them
(resource.ParseQuantity), exactly: what `isQuantity` and `quantity()` in the CRD's CEL rules do."""

from __future__ import annotations

import math
import re
from fractions import Fraction

Quantity = str | int

# The CRD's pattern for a quantity string (the one Kubernetes' own OpenAPI schemas carry). It
# lets through a few strings ParseQuantity refuses ("1e1.5"), which the CEL rules catch.
PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_PARSED = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_SUFFIX = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
# Beyond this exponent the operator refuses a quantity the API server would still take (10**huge
# would not end); no resource comes near it.
_MAX_EXPONENT = 1000


def parse(value: object) -> Fraction | None:
    """The quantity's exact value, rounded away from zero to the nano unit as ParseQuantity does;
    None when the API server would not take it (not a quantity, or a bool)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    match = _PARSED.fullmatch(str(value))
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    amount = Fraction(number)
    if suffix not in _SUFFIX:  # a decimal exponent: "e3", "E-2" ("E" alone is exa, "Ei" binary)
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            return None
        amount *= Fraction(10) ** exponent
    else:
        amount *= _SUFFIX[suffix]
    nanos = amount * 10**9
    return Fraction(math.ceil(nanos) if amount >= 0 else math.floor(nanos), 10**9)
