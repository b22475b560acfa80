"""The chart's safety rails, rendered by real helm: which sidecar images the operator may inject,
and values that contradict each other."""

from __future__ import annotations

from typing import Any

import pytest


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize(
    ("flags", "allowed"),
    [
        # By default: the chart's own image repository, wherever it was pushed.
        ((), "embedding-proxy"),
        (
            ("--set", "image.repository=registry.example.com/ml/embedding-proxy"),
            "registry.example.com/ml/embedding-proxy",
        ),
        (
            ("--set-json", 'operator.allowedImages=["a.example/x/","b.example/y"]'),
            "a.example/x/,b.example/y",
        ),
        # Any image: explicit, and documented as unsafe.
        (("--set-json", "operator.allowedImages=[]"), ""),
    ],
)
def test_the_operator_gets_its_allow_list(
    flags: tuple[str, ...], allowed: str, render: Any
) -> None:
    assert operator_env(render(*flags))["EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES"] == allowed


@pytest.mark.parametrize("entry", ["a b", "x,y", ":latest", "/abs", ""])
def test_an_allow_list_entry_that_is_no_image_is_refused(entry: str, helm: str, kit: Any) -> None:
    result = kit.run_helm(
        helm, "template", "x", str(kit.chart), "--set-json", f'operator.allowedImages=["{entry}"]'
    )
    assert result.returncode != 0
    assert "/operator/allowedImages/0" in result.stderr, result.stderr


def test_namespaces_to_watch_with_cluster_mode_fail_the_install(helm: str, kit: Any) -> None:
    for command in ("template", "install"):
        extra = ("--dry-run=client",) if command == "install" else ()
        result = kit.run_helm(
            helm,
            command,
            "x",
            str(kit.chart),
            *extra,
            "--set-json",
            'operator.watch.namespaces=["ml","search"]',
        )
        assert result.returncode != 0
        assert "operator.watch.namespaces (ml, search) is set, but operator.watch.mode is" in (
            result.stderr
        )


def test_notes_give_the_uninstall_order(helm: str, kit: Any) -> None:
    result = kit.run_helm(helm, "install", "demo", str(kit.chart), "--dry-run=client", "-n", "ml")
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    first = notes.index("kubectl delete embeddingproxies --all -A --timeout=5m")
    assert notes.index("helm uninstall demo -n ml") > first
