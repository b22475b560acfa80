"""The operator's allow list of sidecar images: what an entry allows, how the environment sets it,
and that a plan for an image off the list writes nothing and says why."""

from __future__ import annotations

from typing import Any

import pytest

from embedding_proxy_operator import names
from embedding_proxy_operator.conditions import merge, summarize
from embedding_proxy_operator.reconcile import plan
from embedding_proxy_operator.settings import Options, image_allowed

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
