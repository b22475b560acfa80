"""TEI's own dialect: which routes batch, how their bodies turn into inputs plus shared
parameters, and how a caller's answer is put back together. Pure: no I/O."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..config.settings import LimitsConfig
from .errors import EMPTY, VALIDATION, ProxyError

Item = str | list[int] | list[str]
# TEI's parameters are flags, small numbers and a prompt's name; more than this is not a request.
MAX_PARAMS_BYTES = 4096


class Group:
    """What makes requests share a queue, and what goes upstream beside their inputs: the route
    and every parameter but the inputs, held both parsed and as JSON (sorted keys). Two groups
    are equal when their routes and JSON are; the JSON is encoded once, when a request is parsed."""

    __slots__ = ("_hash", "_head", "encoded", "params", "route")

    def __init__(self, route: str, params: dict[str, Any]) -> None:
        encoded = orjson.dumps(params, option=orjson.OPT_SORT_KEYS) if params else b""
        if len(encoded) > MAX_PARAMS_BYTES:
            # A group holds its key while it lives: huge parameter values must not make groups.
            raise ProxyError(
                413,
                f"parameters other than the inputs exceed {MAX_PARAMS_BYTES} bytes",
                VALIDATION,
            )
        self.route = route
        self.params = params
        self.encoded = encoded
        self._hash = hash((route, encoded))
        # A batch's body is this, the inputs' JSON and "}".
        self._head = encoded[:-1] + b',"inputs":' if params else b'{"inputs":'

    def payload(self, items: Sequence[Item]) -> bytes:
        """The body of one upstream call for `items` of this group."""
        return self._head + orjson.dumps(items) + b"}"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Group) and self.route == other.route and self.encoded == other.encoded
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Group({self.route!r}, {self.encoded!r})"


def group(route: str, params: dict[str, Any]) -> Group:
    """The group of `route` with `params`; without parameters (most requests), one made once:
    a queue's key found by identity, not compared."""
    return Group(route, params) if params else _PLAIN[route]


@dataclass(slots=True)
class BatchRequest:
    """A request that can be batched: inputs plus the parameters they share."""

    group: Group  # its queue, and the parameters sent upstream beside the inputs
    items: list[Item]
    costs: list[int]
    form: str = "list"  # "list"; "single": one input not in a list; "simple": {"input": ...}

    @property
    def route(self) -> str:  # upstream route the batch goes to
        return self.group.route

    @property
    def params(self) -> dict[str, Any]:
        return self.group.params

    @property
    def key(self) -> Group:
        return self.group


# Each route's parameters (its fields in TEI's router, inputs aside: router/src/http/types.rs) and
# the value TEI reads when the field is absent. Fields TEI does not know it ignores (serde without
# deny_unknown_fields), and so does the proxy: they are neither sent upstream nor part of the group
# key. A parameter equal to this value is dropped, so that callers who spell it out and callers who
# leave it out share a queue; only values TEI reads the same whatever its flags belong here: serde's
# fixed defaults, and null for an `Option`. Never a value for `truncate`: TEI reads its absence as
# its `--auto-truncate` (`req.truncate.unwrap_or(info.auto_truncate)`, on by default since 1.9),
# so an explicit `false` or `true` is sent as the caller gave it.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "/embed": {
        "normalize": True,
        "truncate": None,
        "prompt_name": None,
        "dimensions": None,
        "truncation_direction": "Right",
    },
    "/embed_sparse": {"truncate": None, "prompt_name": None, "truncation_direction": "Right"},
    "/embed_all": {"truncate": None, "prompt_name": None, "truncation_direction": "Right"},
    "/tokenize": {"add_special_tokens": True, "prompt_name": None},
    "/predict": {"truncate": None, "raw_scores": False, "truncation_direction": "Right"},
}
BATCH_ROUTES = frozenset(_DEFAULTS)
_PLAIN = {route: Group(route, {}) for route in _DEFAULTS}
_TEXT_ROUTES = frozenset(BATCH_ROUTES - {"/predict"})  # where one text is one input


def quoted(*names: str) -> tuple[bytes, ...]:
    return tuple(b'"%s"' % name.encode() for name in names)


_FIELDS = {route: quoted("inputs", *d) for route, d in _DEFAULTS.items()}
_SIMPLE_FIELDS = quoted("input", *_DEFAULTS["/embed"])
# A key spelled with an escaped ASCII character (`"\u0069nputs"`) is the same key to serde.
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7]")


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON object in a request body, or TEI's errors for what is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ProxyError(
            400, f"Failed to parse the request body as JSON: {e}", VALIDATION
        ) from None
    if not isinstance(data, dict):
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: expected a JSON object",
            VALIDATION,
        )
    return data


def refuse_repeats(body: bytes, needles: tuple[bytes, ...]) -> None:
    """A field given twice is refused, as serde refuses a struct's field given twice (orjson
    keeps the last). `needles` are the route's field names in quotes. A repeat needs a name twice
    in the body, or an escape: a cheap test on every request first, the exact one only when it
    says maybe."""
    found = _needles(needles).findall(body)
    if len(found) == len(set(found)) and (b"\\u" not in body or not _ESCAPED_ASCII.search(body)):
        return
    repeated = _repeated_key(body, {n[1:-1].decode() for n in needles})
    if repeated is not None:
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: "
            f"duplicate field `{repeated}`",
            VALIDATION,
        )


@functools.lru_cache(maxsize=16)  # one per route's fields
def _needles(needles: tuple[bytes, ...]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(re.escape(n) for n in needles))


def _repeated_key(body: bytes, fields: set[str]) -> str | None:
    """The first of `fields` that the body's top-level object holds twice, if any."""
    objects: list[list[tuple[str, Any]]] = []
    try:
        json.loads(body, object_pairs_hook=objects.append)  # the outermost object ends last
    except RecursionError:  # serde_json stops at a depth of 128, far sooner
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: recursion limit exceeded",
            VALIDATION,
        ) from None
    seen: set[str] = set()
    for key, _ in objects[-1]:
        if key in fields:
            if key in seen:
                return key
            seen.add(key)
    return None


def cost(item: Item) -> int:
    """Estimated tokens of an input: about 4 characters a token; token ids count exactly."""
    if isinstance(item, str):
        return len(item) // 4 + 2
    return len(item)


def shared_params(route: str, data: dict[str, Any]) -> dict[str, Any]:
    """The route's parameters that differ from TEI's defaults; unknown fields are left out."""
    if len(data) == 1:  # the inputs alone: most requests
        return {}
    defaults = _DEFAULTS[route]
    return {
        k: v
        for k, v in data.items()
        if k in defaults and not (defaults[k] == v and type(defaults[k]) is type(v))
    }


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
    )


def parse_embed_inputs(value: Any, allow_ids: bool = True) -> tuple[list[Item], bool]:
    """TEI's `Input`: a string, token ids, or a list of either. (items, was single)."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list):
        if allow_ids and value and _is_ids(value):
            return [value], True
        if all(isinstance(v, str) or (allow_ids and _is_ids(v)) for v in value):
            return list(value), False
    kinds = "a string or a list of strings" + (" or token ids" if allow_ids else "")
    raise ProxyError(
        422,
        f"Failed to deserialize the JSON body into the target type: inputs: expected {kinds}",
        VALIDATION,
    )


def parse_predict_inputs(value: Any) -> tuple[list[Item], bool]:
    """TEI's `PredictInput`: a string, a pair [a, b], or a batch of [a] / [a, b] lists."""
    if isinstance(value, str):
        return [[value]], True
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value) and len(value) <= 2:
            return [list(value)], True
        if all(
            isinstance(v, list) and 1 <= len(v) <= 2 and all(isinstance(s, str) for s in v)
            for v in value
        ):
            return [list(v) for v in value], False
    if value == []:  # serde: invalid length 0 (TEI's `/predict` has no empty batch)
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: inputs: invalid length 0, "
            "expected a string, a pair of strings [string, string] or a batch of mixed strings "
            "and pairs [[string], [string, string], ...]",
            VALIDATION,
        )
    raise ProxyError(
        422,
        "Failed to deserialize the JSON body into the target type: inputs: expected a string, a "
        "pair of strings [string, string] or a batch of mixed strings and pairs",
        VALIDATION,
    )


def check_inputs(items: Sequence[Item], limits: LimitsConfig) -> None:
    if not items:
        raise ProxyError(400, "`inputs` cannot be empty", EMPTY)
    if len(items) > limits.max_inputs_per_request:
        raise ProxyError(
            413,
            f"batch size {len(items)} > maximum allowed batch size {limits.max_inputs_per_request}",
            VALIDATION,
        )
    longest = limits.max_input_chars
    for item in items:
        size = (
            len(item) if isinstance(item, str) else sum(len(s) for s in item if isinstance(s, str))
        )
        if size > longest:
            raise ProxyError(
                413,
                f"input of {size} characters exceeds the limit of {longest} characters",
                VALIDATION,
            )


def parse(
    route: str,
    body: bytes,
    limits: LimitsConfig,
    data: dict[str, Any] | None = None,
    simple: bool = True,
) -> BatchRequest:
    """A TEI request on one of the batching routes (`data`: its body, if already decoded;
    `simple`: the proxy's own `{"input": ...}` form is taken on /embed)."""
    if data is None:
        data = decode_object(body)
    if simple and route == "/embed" and "inputs" not in data and "input" in data:
        refuse_repeats(body, _SIMPLE_FIELDS)
        return _parse_simple(data, limits)
    refuse_repeats(body, _FIELDS[route])
    if len(data) == 1 and route in _TEXT_ROUTES:
        # The most common request of all, one text and nothing else: what parse_decoded makes
        # of it, without its general steps.
        value = data.get("inputs")
        if value.__class__ is str and len(value) <= limits.max_input_chars:  # type: ignore[arg-type]
            return BatchRequest(_PLAIN[route], [value], [cost(value)], "single")  # type: ignore[list-item]
    return parse_decoded(route, data, limits)


def parse_instance(route: str, instance: Any, limits: LimitsConfig) -> BatchRequest:
    """One of `/vertex`'s instances, a whole request for `route`. TEI reads it from a parsed
    JSON value (`serde_json::from_value`), where a repeated key has already given way to the
    last, as orjson's does."""
    if not isinstance(instance, dict):
        raise ProxyError(422, "invalid type: expected a JSON object for an instance", VALIDATION)
    return parse_decoded(route, instance, limits)


def parse_decoded(route: str, data: dict[str, Any], limits: LimitsConfig) -> BatchRequest:
    if "inputs" not in data:
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: missing field `inputs`",
            VALIDATION,
        )
    if route == "/predict":
        items, single = parse_predict_inputs(data["inputs"])
    else:
        items, single = parse_embed_inputs(data["inputs"], allow_ids=route != "/tokenize")
    check_inputs(items, limits)
    return BatchRequest(
        group(route, shared_params(route, data)),
        items,
        list(map(cost, items)),
        "single" if single else "list",
    )


def _parse_simple(data: dict[str, Any], limits: LimitsConfig) -> BatchRequest:
    """The single form `{"input": "text"}` -> `{"embedding": [...]}`."""
    value = data["input"]
    if not isinstance(value, str):
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: input: expected a string",
            VALIDATION,
        )
    check_inputs([value], limits)
    params = shared_params("/embed", data)
    return BatchRequest(group("/embed", params), [value], [cost(value)], "simple")


def render(request: BatchRequest, fragments: Sequence[bytes]) -> bytes:
    """The caller's answer from its inputs' fragments, in TEI's shape for the route. Joined once:
    each fragment (a vector of ~10 KB) is copied once, into the answer."""
    if request.form == "simple":
        return b"".join((b'{"embedding":', fragments[0], b"}"))
    if request.form == "single" and request.route == "/predict":
        return bytes(fragments[0])  # TEI answers a single prediction input unnested
    if len(fragments) == 1:
        return b"".join((b"[", fragments[0], b"]"))
    return b"".join(delimited(b"[", fragments, b"]"))


def delimited(opening: bytes, parts: Sequence[bytes], closing: bytes) -> list[bytes]:
    """`opening`, `parts` with commas between them and `closing`: as a list, to join once."""
    out = [opening]
    for part in parts:
        out.append(part)
        out.append(b",")
    if parts:
        out[-1] = closing
    else:
        out.append(closing)
    return out
