"""Where the settings come from besides flags: a YAML or TOML file (the ConfigMap the operator
writes) and `EMBEDDING_PROXY_` environment variables; and the error a wrong setting gets."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "EMBEDDING_PROXY_"
# Settings given as comma-separated lists in the environment.
LISTS = ("api_keys", "cors_allow_origin")


class ConfigError(Exception):
    """A setting is wrong; the message names it in one line."""


def read_file(path: Path) -> dict[str, Any]:
    """The settings in a YAML (or, by suffix, TOML) file."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path}: not valid: {' '.join(str(e).split())}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must hold a mapping of settings")
    return data


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested settings from EMBEDDING_PROXY_A__B=value variables (strings; pydantic converts)."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another")
        leaf = path[-1]
        node[leaf] = [v for v in value.split(",") if v] if leaf in LISTS else value
    return out


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge override into a copy of base."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
