"""Request bodies a hostile client might send, for property tests: bytes, any JSON, and TEI's and
OpenAI's shapes filled with any JSON."""

from __future__ import annotations

import json

from hypothesis import strategies as st

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
