"""The termination settings the operator writes (TEI's preStop sleep, the pod's grace period, the
native sidecar's own preStop hook), sent as the operator sends them to a real API server: it
accepts them, and taking the sidecar out gives back the Deployment's pod template as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.helpers.control_plane import ControlPlane

from embedding_proxy_operator.logic import patches, render
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import parse

Obj = dict[str, Any]


def read(plane: ControlPlane, name: str) -> Obj:
    return json.loads(plane.kubectl("get", "deployment", name, "-o", "json").stdout)


def patch(plane: ControlPlane, name: str, plan: Callable[[Obj], list[Obj]]) -> Obj:
    """Read, plan and send, as the operator does: the patch is guarded by a `test` of the
    resourceVersion, which the controller-manager's status writes can move in between."""
    for _ in range(10):
        ops = plan(read(plane, name))
        done = plane.kubectl(
            "patch", "deployment", name, "--type", "json", "-p", json.dumps(ops), check=False
        )
        if done.returncode == 0:
            return read(plane, name)
        assert "test" in done.stderr or "resourceVersion" in done.stderr, done.stderr
    raise AssertionError(f"deployment {name} kept changing under the patch")


@pytest.mark.parametrize(
    ("native", "sleep_action"),
    [(True, True), (False, True), (True, False)],
    ids=["native-sleep-handler", "container-sleep-handler", "native-exec-sleep"],
)
def test_the_server_takes_the_termination_settings_and_removal_restores(
    control_plane: ControlPlane, native: bool, sleep_action: bool
) -> None:
    name = f"tei-term-{'native' if native else 'container'}-{'sleep' if sleep_action else 'exec'}"
    labels = {"app": name}
    control_plane.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "tei", "image": "tei:1"}]},
                },
            },
        }
    )
    original = read(control_plane, name)
    spec = parse({"targetRef": {"name": name}, "sidecar": {"drainSeconds": 15}})

    def inject(deployment: Obj) -> list[Obj]:
        return patches.inject_ops(
            deployment,
            "p",
            render.sidecar_container(spec, native),
            render.volumes(spec, "p"),
            render.restart_hash(render.proxy_config(spec)),
            render.termination(spec, sleep_action),
        )

    injected = patch(control_plane, name, inject)
    pod = injected["spec"]["template"]["spec"]
    tei = next(c for c in pod["containers"] if c["name"] == "tei")
    seconds = 15 + 20 + render.PRE_STOP_MARGIN_SECONDS
    assert render.pre_stop_seconds(tei["lifecycle"]["preStop"]) == seconds
    assert pod["terminationGracePeriodSeconds"] == seconds + render.EXIT_SECONDS
    if native:
        (sidecar,) = pod["initContainers"]
        assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == names.DRAIN_COMMAND
    # What the server stored is what the operator wants: nothing more to patch.
    assert inject(injected) == []

    restored = patch(control_plane, name, patches.remove_ops)
    assert restored["spec"]["template"] == original["spec"]["template"]
    assert "annotations" not in restored["metadata"] or not (
        {names.PROXY_ANNOTATION, names.TERMINATION_ANNOTATION}
        & set(restored["metadata"]["annotations"])
    )
    control_plane.kubectl("delete", "deployment", name, "--wait=false")
