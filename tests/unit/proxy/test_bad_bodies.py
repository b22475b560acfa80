"""Whatever a client sends, parsing accepts it or answers a 4xx in TEI's shape: never a crash."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from embedding_proxy.api import openai as openai_api
from embedding_proxy.api import tei as tei_api
from embedding_proxy.api.errors import ProxyError
from embedding_proxy.config.settings import LimitsConfig

LIMITS = LimitsConfig(max_inputs_per_request=64, max_input_chars=1000)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # big integers too, which orjson cannot write


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    st.fixed_dictionaries(
        {"inputs": json_values}, optional={"normalize": json_values, "truncate": json_values}
    ).map(dumps),
    st.fixed_dictionaries(
        {"input": json_values}, optional={"encoding_format": json_values, "dimensions": json_values}
    ).map(dumps),
)


def check(parse: object, body: bytes) -> None:
    try:
        parse(body)  # type: ignore[operator]
    except ProxyError as e:
        assert 400 <= e.status < 500
        assert orjson.loads(e.tei_body())["error"]
        assert set(orjson.loads(e.openai_body())) == {"message", "code", "type"}


@settings(deadline=None)  # examples: the profile (tests/conftest.py)
@given(body=bodies, route=st.sampled_from(sorted(tei_api.BATCH_ROUTES)))
def test_tei_routes_never_crash(body: bytes, route: str) -> None:
    check(lambda b: tei_api.parse(route, b, LIMITS), body)


@settings(deadline=None)  # examples: the profile (tests/conftest.py)
@given(body=bodies)
def test_openai_route_never_crashes(body: bytes) -> None:
    check(lambda b: openai_api.parse(b, LIMITS), body)
