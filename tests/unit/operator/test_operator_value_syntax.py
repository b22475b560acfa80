"""What the chart hands the operator in its environment (namespace labels, the image allow list)
is checked twice: by the chart's values schema at `helm install`, and by the operator at start.
The two hold the same patterns, so a value the schema lets through never stops the operator."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from embedding_proxy_operator.model import images
from embedding_proxy_operator.model.settings import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    Options,
    label_problem,
)

SCHEMA = Path(__file__).resolve().parents[3] / "charts" / "embedding-proxy" / "values.schema.json"
LABELS = "EMBEDDING_PROXY_OPERATOR_WEBHOOK_NAMESPACE_LABELS"


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())


def test_the_schema_holds_the_operators_patterns() -> None:
    values = schema()
    definitions = values["definitions"]
    assert definitions["labelKey"]["allOf"][0]["pattern"] == LABEL_KEY_PATTERN
    assert definitions["labelValue"]["pattern"] == LABEL_VALUE_PATTERN
    operator = values["properties"]["operator"]["properties"]
    assert operator["allowedImages"]["items"]["pattern"] == images.ENTRY_PATTERN
    assert operator["webhook"]["properties"]["namespaceLabels"] == {"$ref": "#/definitions/labels"}
    # The default allow list is image.repository: a repository, so always a valid entry.
    repository = values["properties"]["image"]["properties"]["repository"]["pattern"]
    assert repository == f"^{images.REPOSITORY}$"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("team", "search"),
        ("embeddingproxy.io/webhook", "enabled"),
        ("a.b-c.example/Name_1.x", ""),
        ("k", "V-1_2.3"),
        ("p" * 253 + "/" + "n" * 63, "v" * 63),
    ],
)
def test_valid_labels(key: str, value: str) -> None:
    assert label_problem(key, value) is None
    options = Options.from_env({LABELS: f"{key}={value},other=x"})
    assert options.webhook_namespace_labels == ((key, value), ("other", "x"))


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("team name=search", "not key=value"),  # as the chart rendered a key with a space
        ("team=search ml", "not key=value"),
        ("team!=x", "label key 'team!'"),
        ("-team=x", "label key '-team'"),
        ("Example.COM/team=x", "label key"),
        ("a/b/c=x", "label key"),
        ("n" * 64 + "=x", "label key"),
        ("p" * 254 + "/n=x", "label key"),
        ("team=-x", "label value '-x'"),
        ("team=a=b", "label value 'a=b'"),
        ("team=" + "v" * 64, "label value"),
    ],
)
def test_invalid_labels_are_refused_at_start_with_the_reason(raw: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Options.from_env({LABELS: raw})


@pytest.mark.parametrize(
    "key", ["team", "embeddingproxy.io/webhook", "team name", "a/b/c", "-x", "Example.COM/x"]
)
def test_the_schemas_label_key_and_the_operator_agree(key: str) -> None:
    lengths = schema()["definitions"]["labelKey"]["allOf"][1]["pattern"]
    by_schema = bool(re.search(LABEL_KEY_PATTERN, key) and re.search(lengths, key))
    assert by_schema is (label_problem(key, "") is None)
