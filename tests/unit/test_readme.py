"""The README documents every setting and every metric: they are interfaces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from embedding_proxy.config.settings import Config
from embedding_proxy.telemetry.metrics import Metrics

README = (Path(__file__).parents[2] / "README.md").read_text()


def setting_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_paths(annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def test_every_setting_is_in_the_readme_with_its_variable() -> None:
    for path in setting_paths(Config):
        env = "EMBEDDING_PROXY_" + path.upper().replace(".", "__")
        assert f"| `{path}` | `{env}` |" in README, path


def test_every_metric_is_in_the_readme() -> None:
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}" in README, name
