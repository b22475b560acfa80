"""`serve`'s flags, generated from the config model: every setting has one, and its help names the
environment variable and the default, so flags, environment and docs cannot drift apart.

A flag is the setting's name without its section (`batching.max_batch_size` → `--max-batch-size`),
nested sections kept; the upstream's settings keep their section, as they are about TEI and not
the proxy (`upstream.retry.max_attempts` → `--upstream-retry-max-attempts`). Where two settings
would share a name, both get their full path; a name the command itself takes gets `config-`
in front (`version` → `--config-version`). Values stay strings, as in the environment: the model
converts and validates them, so a bad flag gets the same one-line error naming the setting.
"""

from __future__ import annotations

import argparse
import types
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .settings import ENV_PREFIX, Config

# Options of the command itself that no setting may take.
RESERVED = frozenset({"help", "version", "config"})
# Sections whose flags keep the section's name.
QUALIFIED = frozenset({"upstream"})
# Names kept from before flags were generated, where the rule above would give another.
NAMES: Mapping[tuple[str, ...], str] = {("upstream", "url"): "upstream"}


@dataclass(frozen=True)
class Flag:
    path: tuple[str, ...]
    option: str
    field: FieldInfo

    @property
    def dest(self) -> str:
        return "setting__" + "__".join(self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + "__".join(self.path).upper()


def _leaves(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def flags(model: type[BaseModel] = Config) -> list[Flag]:
    leaves = list(_leaves(model))
    short = {
        path: "-".join(path if path[0] in QUALIFIED else path[1:] or path) for path, _ in leaves
    }
    taken = Counter(short.values())
    out = []
    for path, field in leaves:
        name = NAMES.get(path) or short[path]
        if path not in NAMES and taken[name] > 1:
            name = "-".join(path)
        if name in RESERVED:
            name = "config-" + name
        out.append(Flag(path, "--" + name.replace("_", "-"), field))
    return out


def _inner(annotation: Any) -> Any:
    """`int | None` → int."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == "":
        return '""'
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _metavar(kind: Any) -> str:
    """INT, FLOAT, FILE or TEXT; `int | Literal["auto"]` → INT|auto."""
    if get_origin(kind) in (Union, types.UnionType):
        return "|".join(_metavar(k) for k in get_args(kind))
    if get_origin(kind) is Literal:
        return "|".join(str(c) for c in get_args(kind))
    return {int: "INT", float: "FLOAT", Path: "FILE"}.get(kind, "TEXT")


def _comma_list(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def add_arguments(parser: argparse.ArgumentParser, model: type[BaseModel] = Config) -> None:
    """One flag per setting, grouped by section."""
    groups: dict[str, Any] = {}
    for flag in flags(model):
        section = flag.path[0] if len(flag.path) > 1 else "general"
        if section not in groups:
            sub = model.model_fields.get(section)
            doc = getattr(sub.annotation, "__doc__", None) if sub else None
            groups[section] = parser.add_argument_group(f"{section} settings", doc)
        kind = _inner(flag.field.annotation)
        help_text = (flag.field.description or "").replace("%", "%%")
        help_text += f"\n[env: {flag.env}=]\n[default: {_default(flag.field)}]"
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": None, "help": help_text}
        if get_origin(kind) is Literal:
            kwargs["choices"] = [str(c) for c in get_args(kind)]
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is list:
            kwargs.update(type=_comma_list, metavar="A,B")
        else:
            kwargs["metavar"] = _metavar(kind)
        groups[section].add_argument(flag.option, **kwargs)


def settings_of(args: argparse.Namespace, model: type[BaseModel] = Config) -> dict[str, Any]:
    """The nested settings given on the command line, for `config.load`."""
    out: dict[str, Any] = {}
    for flag in flags(model):
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        node = out
        for part in flag.path[:-1]:
            node = node.setdefault(part, {})
        node[flag.path[-1]] = value
    return out


class HelpFormatter(argparse.HelpFormatter):
    """Keeps line breaks in help (before `[env: ...]`, as TEI's help has it) and paragraphs in
    the description."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines: list[str] = []
        for part in text.splitlines():
            lines += super()._split_lines(part, width)
        return lines

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.strip().split("\n\n")
        return "\n\n".join(
            super(HelpFormatter, self)._fill_text(p, width, indent) for p in paragraphs
        )
