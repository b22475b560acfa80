"""The operator's allow list of sidecar images: what an entry allows (matched by the parts of the
image reference, never by string prefix), how the environment sets it, and that a plan for an
image off the list writes nothing and says why."""

from __future__ import annotations

from typing import Any

import pytest

from embedding_proxy_operator.logic.conditions import merge, summarize
from embedding_proxy_operator.logic.plan import plan
from embedding_proxy_operator.model import images, names
from embedding_proxy_operator.model.images import with_sidecar_image
from embedding_proxy_operator.model.settings import Options, image_allowed

Obj = dict[str, Any]
ALLOWED = ("registry.example.com/ml/embedding-proxy", "mirror.example.com/team/", "localhost")


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/ml/embedding-proxy",
        "registry.example.com/ml/embedding-proxy:0.2.0",
        "registry.example.com/ml/embedding-proxy@sha256:" + "a" * 64,
        "registry.example.com/ml/embedding-proxy:0.2.0@sha256:" + "a" * 64,
        "mirror.example.com/team/anything:1",
        "localhost:latest",
    ],
)
def test_allowed_images(image: str) -> None:
    assert image_allowed(image, ALLOWED)


@pytest.mark.parametrize(
    "image",
    [
        # A longer repository name is another repository.
        "registry.example.com/ml/embedding-proxy-evil:1",
        "registry.example.com/ml/embedding-proxy/evil:1",
        "registry.example.com/ml/other:1",
        # Not under the prefix (the `/` ends a path segment).
        "mirror.example.com/teamx/anything:1",
        "mirror.example.com/team",
        # `localhost:5000` is a registry, not a tag of `localhost`.
        "localhost:5000/anything:1",
        "docker.io/library/busybox",
        "",
    ],
)
def test_refused_images(image: str) -> None:
    assert not image_allowed(image, ALLOWED)


DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64

# (entry, image, allowed): one entry at a time, the attacks on string-prefix matching included.
TABLE = [
    # A repository: any tag or digest of it, and nothing that merely begins like it.
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy", True),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy:1", True),
    ("ghcr.io/acme/embedding-proxy", f"ghcr.io/acme/embedding-proxy@{DIGEST_A}", True),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy-evil:1", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxyevil", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy/evil:1", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy:1/../evil", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy@sha256:abc", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io/acme/embedding-proxy:1 ", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io.attacker.net/acme/embedding-proxy:1", False),
    ("ghcr.io/acme/embedding-proxy", "ghcr.io:8443/acme/embedding-proxy:1", False),
    # A registry: ends in `/`; its host is compared whole (without regard to case), port too.
    ("registry.example.com/", "registry.example.com/x", True),
    ("registry.example.com/", "Registry.Example.COM/team/x:1", True),
    ("registry.example.com/", "registry.example.com.attacker.net/x", False),
    ("registry.example.com/", "registry.example.comx/x", False),
    ("registry.example.com/", "registry.example.com:5000/x", False),
    ("registry.example.com/", "attacker.net/registry.example.com/x", False),
    # Without `/` it is a repository of that name (as Docker reads it), never the registry.
    ("registry.example.com", "registry.example.com/x", False),
    ("registry.example.com", "registry.example.com.attacker.net/x", False),
    ("localhost:5000/", "localhost:5000/x:1", True),
    ("localhost:5000/", "localhost:5001/x", False),
    ("localhost:5000/", "localhost/x", False),
    # A path under a registry: whole segments, and only what is under it.
    ("ghcr.io/acme/", "ghcr.io/acme/embedding-proxy:1", True),
    ("ghcr.io/acme/", "ghcr.io/acme/team/x", True),
    ("ghcr.io/acme/", "ghcr.io/acme-evil/x", False),
    ("ghcr.io/acme/", "ghcr.io/acme", False),
    ("ghcr.io/acme/", "ghcr.io/acme:1", False),
    ("ghcr.io/acme/", "other.io/acme/x", False),
    # Pinned: a tag allows that tag alone (a digest beside it would decide what runs); a digest
    # allows that digest whatever tag is written with it.
    ("ghcr.io/acme/ep:0.2.0", "ghcr.io/acme/ep:0.2.0", True),
    ("ghcr.io/acme/ep:0.2.0", "ghcr.io/acme/ep:0.2.1", False),
    ("ghcr.io/acme/ep:0.2.0", "ghcr.io/acme/ep", False),
    ("ghcr.io/acme/ep:0.2.0", f"ghcr.io/acme/ep:0.2.0@{DIGEST_B}", False),
    (f"ghcr.io/acme/ep@{DIGEST_A}", f"ghcr.io/acme/ep@{DIGEST_A}", True),
    (f"ghcr.io/acme/ep@{DIGEST_A}", f"ghcr.io/acme/ep:any@{DIGEST_A}", True),
    (f"ghcr.io/acme/ep@{DIGEST_A}", f"ghcr.io/acme/ep@{DIGEST_B}", False),
    (f"ghcr.io/acme/ep@{DIGEST_A}", "ghcr.io/acme/ep:0.2.0", False),
    # As written: no default registry, no `library/`, no `latest` is filled in.
    ("embedding-proxy", "embedding-proxy:0.1.0", True),
    ("embedding-proxy", "docker.io/library/embedding-proxy:0.1.0", False),
    ("embedding-proxy", "library/embedding-proxy", False),
    ("docker.io/library/busybox", "busybox", False),
    ("embedding-proxy:latest", "embedding-proxy", False),
    ("acme/", "acme/x", True),
    ("acme/", "docker.io/acme/x", False),
]


@pytest.mark.parametrize(
    ("entry", "image", "allowed"), TABLE, ids=[f"{e} {i}" for e, i, _ in TABLE]
)
def test_what_an_entry_allows(entry: str, image: str, allowed: bool) -> None:
    assert image_allowed(image, (entry,)) is allowed


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("embedding-proxy", ("", ("embedding-proxy",), None, None)),
        ("acme/ep:1", ("", ("acme", "ep"), "1", None)),
        ("localhost/ep", ("localhost", ("ep",), None, None)),
        ("localhost:5000/a/b:c", ("localhost:5000", ("a", "b"), "c", None)),
        ("Ghcr.IO/acme/ep@" + DIGEST_A, ("ghcr.io", ("acme", "ep"), None, DIGEST_A)),
        ("[::1]:5000/ep", ("[::1]:5000", ("ep",), None, None)),
    ],
)
def test_references_split_as_docker_splits_them(image: str, parts: tuple[object, ...]) -> None:
    ref = images.parse(image)
    assert ref is not None and (ref.registry, ref.path, ref.tag, ref.digest) == parts


@pytest.mark.parametrize(
    "image", ["", "Acme/EP", "acme//ep", "ep:", "ep@sha256:", ":1", "ep:" + "1" * 129, "a" * 2000]
)
def test_what_no_runtime_would_pull_is_no_reference(image: str) -> None:
    assert images.parse(image) is None
    assert not image_allowed(image, ("acme/", "ep", "a/"))


@pytest.mark.parametrize(
    "entry", [":latest", "@" + DIGEST_A, "/x", "ghcr.io//x", "acme//", "ghcr.io/Acme/", "a;b"]
)
def test_an_entry_that_is_no_reference_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match=r"ALLOWED_IMAGES: .* is neither a registry"):
        Options.from_env({"EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES": f"ghcr.io/acme/, {entry}"})
    with pytest.raises(ValueError, match="ALLOWED_IMAGES"):
        Options(allowed_images=(entry,))
    # (In the environment white space separates entries; given whole, it is refused too.)
    with pytest.raises(ValueError, match="ALLOWED_IMAGES"):
        Options(allowed_images=("ghcr.io/acme/ ep",))


def test_a_dotted_host_without_slash_is_pointed_out() -> None:
    assert images.names_a_registry("registry.example.com")
    assert images.names_a_registry("registry.example.com:5000")
    for entry in ("registry.example.com/", "embedding-proxy", "ghcr.io/acme/ep", "my.repo:1.0"):
        assert not images.names_a_registry(entry)


def test_an_empty_list_allows_any_image() -> None:
    assert image_allowed("anything/at:all", ())


def test_the_list_comes_from_the_environment() -> None:
    env = {"EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES": "a/b, c/ d,e"}
    assert Options.from_env(env).allowed_images == ("a/b", "c/", "d", "e")
    assert Options.from_env({}).allowed_images == ()
    with pytest.raises(ValueError, match="ALLOWED_IMAGES"):
        Options.from_env({"EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES": ":latest"})


def proxy(image: str) -> Obj:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"targetRef": {"name": "tei"}, "sidecar": {"image": image}},
    }


def deployment() -> Obj:
    containers = [{"name": "tei", "ports": [{"containerPort": 80}]}]
    return {
        "metadata": {"name": "tei", "namespace": "ns", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"containers": containers}}},
    }


def test_a_plan_for_an_image_off_the_list_writes_nothing_and_says_why() -> None:
    p = plan(proxy("attacker.example/miner:1"), deployment(), True, True, ALLOWED)
    assert p.ops == [] and p.configmap is None
    assert [w.reason for w in p.warnings] == ["ImageNotAllowed"]
    assert "'attacker.example/miner:1' is not allowed" in p.warnings[0].message
    ready = summarize(merge([], p.facts, 1, "t"))
    assert (ready.status, ready.reason) == ("False", "ImageNotAllowed")

    ok = plan(proxy("registry.example.com/ml/embedding-proxy:0.2.0"), deployment(), True, True)
    assert ok.ops and ok.configmap is not None
    assert plan(proxy("localhost:1"), deployment(), True, True, ALLOWED).ops
    assert names.SIDECAR_INJECTED in {f.type for f in p.facts}


def test_the_default_sidecar_image_comes_from_the_environment() -> None:
    assert Options.from_env({}).sidecar_image == names.DEFAULT_SIDECAR_IMAGE
    env = {"EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE": "registry.example.com/ep:1.2"}
    assert Options.from_env(env).sidecar_image == "registry.example.com/ep:1.2"
    with pytest.raises(ValueError, match=r"SIDECAR_IMAGE: sidecar\.image must be an image"):
        Options.from_env({"EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE": "Registry/EP:1 "})


@pytest.mark.parametrize(
    ("spec", "image"),
    [
        ({"targetRef": {"name": "tei"}}, "registry.example.com/ep:1.2"),
        ({"targetRef": {"name": "tei"}, "sidecar": {}}, "registry.example.com/ep:1.2"),
        (
            {"targetRef": {"name": "tei"}, "sidecar": {"mode": "Container"}},
            "registry.example.com/ep:1.2",
        ),
        ({"targetRef": {"name": "tei"}, "sidecar": {"image": "own/ep:3"}}, "own/ep:3"),
    ],
)
def test_a_proxy_without_an_image_gets_the_operators(spec: dict[str, Any], image: str) -> None:
    proxy = {"metadata": {"name": "tei", "namespace": "ml"}, "spec": spec}
    acted_on = with_sidecar_image(proxy, "registry.example.com/ep:1.2")
    assert acted_on["spec"]["sidecar"]["image"] == image
    assert {k: v for k, v in acted_on["spec"]["sidecar"].items() if k != "image"} == {
        k: v for k, v in (spec.get("sidecar") or {}).items() if k != "image"
    }
    assert "image" not in (proxy["spec"].get("sidecar") or {}) or image == "own/ep:3"
    planned = plan(acted_on, None, True, allowed_images=("registry.example.com/ep", "own/"))
    assert planned.spec is not None and planned.spec.sidecar.image == image
