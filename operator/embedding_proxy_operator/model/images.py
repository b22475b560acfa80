"""Image references, read as container runtimes read them (Docker's reference grammar), and the
operator's allow list of sidecar images, matched by the parts of a reference (registry,
repository path segments, tag, digest), never by string prefix. Pure: no I/O.

Nothing is normalised: no default registry, no `library/`, no `latest` is added, so an entry
allows an image only as written (`embedding-proxy` does not allow `docker.io/library/...`). The
registry alone compares without regard to case, as DNS names do."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Docker's grammar (github.com/distribution/reference, regexp.go). Each pattern is valid in
# Python's `re` and in Go's RE2 alike: the chart's values schema holds ENTRY_PATTERN as its own.
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
HOST = rf"({_HOST_LABEL}(\.{_HOST_LABEL})*|\[[0-9A-Fa-f:]+\])(:[0-9]+)?"
COMPONENT = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
TAG = r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,127}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
REPOSITORY = rf"({HOST}/)?{COMPONENT}(/{COMPONENT})*"
REFERENCE = rf"{REPOSITORY}(:{TAG})?(@{DIGEST})?"
# An allow-list entry: a registry or a path under it ending in `/`, or a reference.
ENTRY_PATTERN = rf"^({HOST}/({COMPONENT}/)*|({COMPONENT}/)+|{REFERENCE})$"
# The longest repository name (registry included) the runtimes take.
MAX_NAME = 255
# Longer than any valid reference: a name, a tag of 128 and a long digest.
MAX_REFERENCE = 1024

_REFERENCE = re.compile(rf"(?P<name>{REPOSITORY})(:(?P<tag>{TAG}))?(@(?P<digest>{DIGEST}))?")
_COMPONENT = re.compile(COMPONENT)
_ENTRY = re.compile(ENTRY_PATTERN)
_DOTTED_HOST = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})+(:[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    """An image reference's parts; `registry` is "" when none is written."""

    registry: str
    path: tuple[str, ...]
    tag: str | None = None
    digest: str | None = None


def _split(name: str) -> tuple[str, tuple[str, ...]]:
    """Registry and path of a repository name, as Docker splits them: the first segment is a
    registry when a `/` follows it and it holds a `.` or a `:`, is `localhost`, or is not all
    lower case (`acme/x` is the path `acme/x`, `localhost:5000/x` the registry `localhost:5000`)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first.lower(), tuple(rest.split("/"))
    return "", tuple(name.split("/"))


def parse(image: str) -> Reference | None:
    """The parts of an image reference; None when a runtime would not take it."""
    if len(image) > MAX_REFERENCE:
        return None  # (and the pattern never sees a hostile length)
    found = _REFERENCE.fullmatch(image)
    if found is None or len(found["name"]) > MAX_NAME:
        return None
    registry, path = _split(found["name"])
    if not all(_COMPONENT.fullmatch(segment) for segment in path):
        return None  # a first segment that is no registry must be a path segment
    return Reference(registry, path, found["tag"], found["digest"])


@dataclass(frozen=True)
class Entry:
    """What one allow-list entry allows: every repository under `registry`/`path` (`under`),
    or the repository `registry`/`path`, with any tag and digest unless `tag`/`digest` pin one."""

    registry: str
    path: tuple[str, ...]
    under: bool = False
    tag: str | None = None
    digest: str | None = None


@functools.lru_cache(maxsize=256)
def parse_entry(text: str) -> Entry:
    """One allow-list entry; ValueError saying what is wrong with it."""
    if not _ENTRY.fullmatch(text):
        raise ValueError(
            f"{text!r} is neither a registry or a path under it ending in '/' (such as "
            "'registry.example.com/' or 'ghcr.io/acme/') nor an image repository, optionally "
            "with a tag or digest (such as 'ghcr.io/acme/embedding-proxy' or '...:0.2.0')"
        )
    if text.endswith("/"):
        registry, path = _split(text)
        path = path[:-1]  # the empty segment after the final `/`
        if not all(_COMPONENT.fullmatch(segment) for segment in path):
            raise ValueError(f"{text!r}: {'/'.join(path)!r} is not a repository path")
        return Entry(registry, path, under=True)
    ref = parse(text)
    if ref is None:
        raise ValueError(f"{text!r} is not an image reference (a name over {MAX_NAME} characters?)")
    return Entry(ref.registry, ref.path, tag=ref.tag, digest=ref.digest)


def allows(entry: Entry, ref: Reference) -> bool:
    if entry.registry != ref.registry:
        return False
    if entry.under:
        n = len(entry.path)
        return len(ref.path) > n and ref.path[:n] == entry.path
    if ref.path != entry.path:
        return False
    if entry.digest:
        # The digest decides what runs; a tag beside it is not looked at by the runtime.
        return ref.digest == entry.digest
    if entry.tag:
        # A digest beside the tag would decide what runs, whatever the tag says.
        return ref.tag == entry.tag and ref.digest is None
    return True


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether `image` is on the allow list (an empty list allows any image). An image that is
    no valid reference is allowed by no entry."""
    if not allowed:
        return True
    ref = parse(image)
    return ref is not None and any(allows(parse_entry(e), ref) for e in allowed)


def names_a_registry(entry: str) -> bool:
    """Whether an entry is a dotted host without `/` (`registry.example.com[:5000]`): as an entry
    it names the repository of that name, which is seldom what was meant (`registry.example.com/`
    is the registry)."""
    return _DOTTED_HOST.fullmatch(entry) is not None


def with_sidecar_image(proxy: Mapping[str, Any], image: str) -> dict[str, Any]:
    """The EmbeddingProxy as the operator acts on it: `image` as its sidecar image where its spec
    names none (the operator's setting; the chart sets it from the value that names the
    operator's own image)."""
    spec = proxy.get("spec")
    if not isinstance(spec, Mapping):
        return dict(proxy)
    sidecar = spec.get("sidecar")
    if sidecar is not None and (not isinstance(sidecar, Mapping) or "image" in sidecar):
        return dict(proxy)
    return {**proxy, "spec": {**spec, "sidecar": {**(sidecar or {}), "image": image}}}
