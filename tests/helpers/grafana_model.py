"""A dashboard checked against Grafana's own dashboard model: the types grafana-foundation-sdk
generates from Grafana's schema (dashboard, each core panel plugin's options and field config,
the Prometheus query). The SDK's parser accepts anything, so this walks what it parsed and
checks each value against the model's type annotations, and checks that nothing we wrote was
dropped (a field the model does not know)."""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard, prometheus

register_default_plugins()


def problems(data: dict[str, Any]) -> list[str]:
    """Everything about `data` (a dashboard's JSON) that Grafana's model does not allow."""
    found: list[str] = []
    model = dashboard.Dashboard.from_json(data)
    _check(model, dashboard.Dashboard, "dashboard", found)
    for panel in model.panels or []:
        where = f"panel {panel.title!r}"
        if isinstance(panel, dashboard.RowPanel):
            continue
        if runtime.panelcfg_config(panel.type_val or "") is None:
            found.append(f"{where}: {panel.type_val!r} is not a Grafana core panel type")
        for target in panel.targets or []:
            if not isinstance(target, prometheus.Dataquery):
                found.append(f"{where}: a query that is not a Prometheus query")
    for variable in (model.templating.list_val or []) if model.templating else []:
        _check(variable, dashboard.VariableModel, f"variable {variable.name!r}", found)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    found += [f"{path}: not in Grafana's model (dropped)" for path in _dropped(data, again, "$")]
    return found


def _check(value: Any, hint: Any, path: str, found: list[str]) -> None:
    if not _fits(value, hint, path, found):
        found.append(f"{path}: {value!r} is not a {hint}")


def _fits(value: Any, hint: Any, path: str, found: list[str]) -> bool:
    if hint is Any or hint is object:
        # A plugin's options or field config: parsed into the plugin's own model, check that.
        if hasattr(value, "to_json"):
            _fields(value, path, found)
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a, path, []) for a in args) and (
            value is None or _deep(value, [a for a in args if a is not type(None)], path, found)
        )
    if value is None:
        return hint is type(None)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(
            _fits(v, args[0], f"{path}[{i}]", found) for i, v in enumerate(value)
        )
    if origin is dict:
        return isinstance(value, dict) and all(
            _fits(v, args[1], f"{path}.{k}", found) for k, v in value.items()
        )
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type):
        if not isinstance(value, hint):
            return False
        if hasattr(value, "to_json"):
            _fields(value, path, found)
        return True
    return True


def _fields(value: Any, path: str, found: list[str]) -> None:
    for name, hint in typing.get_type_hints(type(value)).items():
        _check(getattr(value, name, None), hint, f"{path}.{name}", found)


def _deep(value: Any, hints: list[Any], path: str, found: list[str]) -> bool:
    """For a union, check the fields of the first branch the value fits."""
    for hint in hints:
        if _fits(value, hint, path, []):
            _fits(value, hint, path, found)
            return True
    return False


def _dropped(ours: Any, theirs: Any, path: str) -> list[str]:
    """Paths of what we wrote that the model did not keep."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path]
        out: list[str] = []
        for key, value in ours.items():
            if key not in theirs:
                out.append(f"{path}.{key}")
            else:
                out += _dropped(value, theirs[key], f"{path}.{key}")
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            return [path]
        return [p for i, v in enumerate(ours) for p in _dropped(v, theirs[i], f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path} (was {ours!r}, reads {theirs!r})"]
