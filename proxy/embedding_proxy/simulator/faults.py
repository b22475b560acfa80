"""Fault injection for tests (off until asked for): `POST /simulator/faults`, `DELETE` to clear.

A fault applies to the next `times` requests on the inference routes (all of them while `times`
is left out), optionally only on some `routes`:

- `delay_ms`: wait this long before handling the request (a stalled server);
- `status` and/or `body`: answer this instead, computing nothing (a body without a status is
  sent with 200; a status of 400 or more without a body gets TEI's JSON error shape);
- `truncate_body`: compute the real answer, then send only its first half;
- `wrong_count`: compute the real answer, then leave out its last result.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import STATUS, STATUS_BEFORE_1_9, ErrorType

# 413 is TEI 1.8's Validation status, 422 TEI 1.9's (and a Tokenizer error's).
_TYPE_FOR_STATUS = {s: t for t, s in STATUS_BEFORE_1_9.items()} | {s: t for t, s in STATUS.items()}
_KEYS = {"delay_ms", "status", "body", "truncate_body", "wrong_count", "times", "routes"}


@dataclass(frozen=True)
class Fault:
    delay_ms: float = 0.0
    status: int | None = None
    body: str | None = None
    truncate_body: bool = False
    wrong_count: bool = False
    times: int | None = None
    routes: frozenset[str] | None = None

    @property
    def replaces_answer(self) -> bool:
        return self.body is not None or (self.status is not None and self.status >= 400)

    def answer(self) -> tuple[int, bytes, str]:
        """Status, body and content type of a replaced answer."""
        status = 200 if self.status is None else self.status
        if self.body is None:
            error_type = _TYPE_FOR_STATUS.get(status, ErrorType.BACKEND)
            body = orjson.dumps({"error": "injected fault", "error_type": error_type.value})
            return status, body, "application/json"
        try:
            orjson.loads(self.body)
            content_type = "application/json"
        except orjson.JSONDecodeError:
            content_type = "text/html" if self.body.lstrip().startswith("<") else "text/plain"
        return status, self.body.encode(), content_type

    def mangle(self, body: bytes) -> bytes:
        """Apply `wrong_count` and `truncate_body` to a real answer."""
        if self.wrong_count:
            parsed = orjson.loads(body)
            if isinstance(parsed, list) and parsed:
                parsed.pop()
            elif isinstance(parsed, dict) and parsed.get("data"):
                parsed["data"].pop()
            body = orjson.dumps(parsed)
        if self.truncate_body:
            body = body[: len(body) // 2]
        return body


def parse_fault(spec: object) -> Fault:
    """Check a fault spec; ValueError says what is wrong with it."""
    if not isinstance(spec, dict):
        raise ValueError("a fault is a JSON object")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}; known: {sorted(_KEYS)}")

    def number(key: str, minimum: int, integer: bool = True) -> float | None:
        value = spec.get(key)
        if value is None:
            return None
        ok = type(value) is int or (not integer and type(value) is float)
        if not ok or value < minimum:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"`{key}` must be {kind} >= {minimum}")
        return value

    def flag(key: str) -> bool:
        value = spec.get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f"`{key}` must be true or false")
        return value

    status = number("status", 100)
    if status is not None and status > 599:
        raise ValueError("`status` must be an HTTP status code")
    body = spec.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("`body` must be a string")
    routes = spec.get("routes")
    if routes is not None and not (
        isinstance(routes, list) and all(isinstance(r, str) for r in routes)
    ):
        raise ValueError("`routes` must be a list of paths")
    times = number("times", 1)
    return Fault(
        delay_ms=float(number("delay_ms", 0, integer=False) or 0.0),
        status=None if status is None else int(status),
        body=body,
        truncate_body=flag("truncate_body"),
        wrong_count=flag("wrong_count"),
        times=None if times is None else int(times),
        routes=None if routes is None else frozenset(routes),
    )


class Faults:
    """The fault in force, if any, and how many more requests it applies to."""

    def __init__(self) -> None:
        self.current: Fault | None = None
        self.left: int | None = None
        self.applied = 0

    def set(self, fault: Fault) -> None:
        self.current, self.left = fault, fault.times

    def clear(self) -> None:
        self.current, self.left = None, None

    def take(self, route: str) -> Fault | None:
        """The fault for this request, counting it against `times`."""
        fault = self.current
        if fault is None or (fault.routes is not None and route not in fault.routes):
            return None
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                self.clear()
        self.applied += 1
        return fault

    def describe(self) -> dict[str, object]:
        fault = self.current
        if fault is None:
            return {"active": False, "applied": self.applied}
        spec = {k: v for k, v in fault.__dict__.items() if v not in (None, False, 0.0)}
        if fault.routes is not None:
            spec["routes"] = sorted(fault.routes)
        return {"active": True, "left": self.left, "fault": spec, "applied": self.applied}
