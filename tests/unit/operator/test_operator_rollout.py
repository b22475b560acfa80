"""The GPU rollout trap, by table: which Deployments need a spare GPU to roll out, resolved as
the Deployment controller resolves maxSurge (rounded up) and maxUnavailable (rounded down)."""

from __future__ import annotations

from typing import Any

import pytest

from embedding_proxy_operator.handlers.state import MAX_EVENT_MESSAGE
from embedding_proxy_operator.logic import rollout
from embedding_proxy_operator.logic.plan import plan
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
GPU = {"limits": {"nvidia.com/gpu": 1}}


def deployment(
    resources: Obj | None = GPU,
    strategy: Obj | None = None,
    replicas: int | None = 1,
    init: bool = False,
) -> Obj:
    container: Obj = {"name": "tei", "image": "tei"}
    if resources is not None:
        container["resources"] = resources
    pod: Obj = {"containers": [{"name": "app", "image": "app"}]}
    pod.setdefault("initContainers" if init else "containers", []).append(container)
    spec: Obj = {"template": {"spec": pod}}
    if replicas is not None:
        spec["replicas"] = replicas
    if strategy is not None:
        spec["strategy"] = strategy
    return {"metadata": {"name": "tei", "namespace": "ns"}, "spec": spec}


def rolling(surge: Any = None, unavailable: Any = None) -> Obj:
    bounds = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {k: v for k, v in bounds.items() if v is not None},
    }


@pytest.mark.parametrize(
    ("dep", "trapped", "surge", "unavailable"),
    [
        # The defaults (25%/25%): surge rounds up to 1, unavailable down to 0 below 4 replicas.
        (deployment(), True, 1, 0),
        (deployment(strategy={"type": "RollingUpdate"}), True, 1, 0),
        (deployment(replicas=3), True, 1, 0),
        (deployment(replicas=4), False, 1, 1),
        (deployment(replicas=None), True, 1, 0),
        # Zero replicas: both resolve to 0, and the controller then allows one unavailable.
        (deployment(replicas=0), False, 0, 1),
        (deployment(strategy=rolling(1, 0), replicas=0), True, 1, 0),
        # The fixes.
        (deployment(strategy=rolling(0, 1)), False, 0, 1),
        (deployment(strategy=rolling("0%", "100%"), replicas=5), False, 0, 5),
        (deployment(strategy={"type": "Recreate"}), False, None, None),
        # Surge with room to stop an old pod first is no trap.
        (deployment(strategy=rolling(1, 1), replicas=2), False, 1, 1),
        (deployment(strategy=rolling("50%", "50%"), replicas=2), False, 1, 1),
        (deployment(strategy=rolling("10%", "10%"), replicas=9), True, 1, 0),
        (deployment(strategy=rolling("10%", "10%"), replicas=10), False, 1, 1),
        (deployment(strategy=rolling(2, "0%"), replicas=8), True, 2, 0),
        # One field set: the other keeps its default.
        (deployment(strategy=rolling(surge=0)), False, 0, 1),
        (deployment(strategy=rolling(unavailable=0), replicas=8), True, 2, 0),
        # Which resources count as a GPU.
        (deployment(resources={"requests": {"amd.com/gpu": "2"}}), True, 1, 0),
        (deployment(resources={"limits": {"gpu.intel.com/i915": 1}}), False, 1, 0),
        (deployment(resources={"limits": {"nvidia.com/gpu": 0}}), False, 1, 0),
        (deployment(resources={"limits": {"cpu": "2", "memory": "8Gi"}}), False, 1, 0),
        (deployment(resources=None), False, 1, 0),
        (deployment(init=True), True, 1, 0),
    ],
)
def test_which_rollouts_need_a_spare_gpu(
    dep: Obj, trapped: bool, surge: int | None, unavailable: int | None
) -> None:
    posts = rollout.fenceposts(dep)
    if surge is None:
        assert posts is None
    else:
        assert posts is not None and (posts.max_surge, posts.max_unavailable) == (
            surge,
            unavailable,
        )
    fact = rollout.surge_fact(dep, "tei")
    assert fact.type == names.ROLLOUT_NEEDS_SPARE_GPU
    assert fact.status == ("True" if trapped else "False")


def test_the_message_names_the_resource_the_bounds_and_the_fix() -> None:
    fact = rollout.surge_fact(deployment(strategy=rolling("25%", "25%"), replicas=2), "tei")
    assert fact.reason == "SurgeNeedsSpareGPU"
    for part in ("nvidia.com/gpu", "'tei'", "maxSurge 1 and maxUnavailable 0", "(replicas: 2)"):
        assert part in fact.message
    assert rollout.FIX in fact.message
    # Whole in the Event too.
    assert len(fact.message.replace("'tei'", repr("t" * 63))) <= MAX_EVENT_MESSAGE


def test_a_value_the_api_server_would_refuse_is_not_called_a_trap() -> None:
    assert rollout.fenceposts(deployment(strategy=rolling("one", 0))) is None
    assert rollout.surge_fact(deployment(strategy=rolling("one", 0)), "tei").status == "False"


@pytest.mark.parametrize("mode", ["Deployment", "Webhook"])
def test_the_plan_says_so_in_a_condition_and_a_warning(mode: str) -> None:
    # Both modes roll the pods for a change that needs a restart.
    spec = {"targetRef": {"name": "tei"}, "injection": mode}
    proxy = {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}
    trapped = plan(proxy, deployment(), True)
    (fact,) = [f for f in trapped.facts if f.type == names.ROLLOUT_NEEDS_SPARE_GPU]
    assert fact.status == "True"
    assert [w.message for w in trapped.warnings if w.reason == fact.type] == [fact.message]

    fixed = plan(proxy, deployment(strategy={"type": "Recreate"}), True)
    (fact,) = [f for f in fixed.facts if f.type == names.ROLLOUT_NEEDS_SPARE_GPU]
    assert fact.status == "False" and fact.reason == "RolloutFits"
    assert not [w for w in fixed.warnings if w.reason == fact.type]
