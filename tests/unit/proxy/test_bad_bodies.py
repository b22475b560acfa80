"""Whatever a client sends, parsing accepts it or answers a 4xx in TEI's shape: never a crash."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.bodies import bodies

from embedding_proxy.api import openai as openai_api
from embedding_proxy.api import tei as tei_api
from embedding_proxy.api.errors import ProxyError
from embedding_proxy.config.settings import LimitsConfig

LIMITS = LimitsConfig(max_inputs_per_request=64, max_input_chars=1000)


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
