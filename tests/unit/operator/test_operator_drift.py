"""Drift, from managedFields: a write that puts back a config already written is drift, and who
changed it is named."""

from __future__ import annotations

from typing import Any

from embedding_proxy_operator.logic.drift import (
    changed_by,
    configmap_patch,
    configuration_patch,
    drifted,
    edited_by_others,
    scaled_object_patch,
)

OWN = "embedding-proxy-operator"


def entry(manager: str, time: str, *fields: str, operation: str = "Update") -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "time": time,
        "fieldsV1": {f: {} for f in fields},
    }


def cm(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"managedFields": list(entries)}}


def test_the_writer_who_took_the_data_over_is_named_newest_first() -> None:
    edited = cm(
        entry(OWN, "2026-01-01T00:00:05Z", "f:metadata"),
        entry("kubectl-label", "2026-01-01T00:00:09Z", "f:metadata"),
        entry("kubectl-edit", "2026-01-01T00:00:05Z", "f:data"),
        entry("helm", "2026-01-01T00:00:07Z", "f:data", operation="Apply"),
    )
    assert changed_by(edited, OWN) == (
        "helm (Apply, 2026-01-01T00:00:07Z), kubectl-edit (Update, 2026-01-01T00:00:05Z)"
    )
    # Nobody else holds the data: whoever else wrote anything; nobody at all: our own name.
    assert changed_by(cm(entry("x", "t", "f:metadata")), OWN) == "x (Update, t)"
    assert "operator's own field manager" in changed_by(cm(entry(OWN, "t", "f:data")), OWN)


def test_only_a_config_already_written_is_drift() -> None:
    written = {"status": {"configVersion": "v1"}}
    before = cm(entry("kubectl-edit", "t", "f:data"))
    assert drifted(written, "updated", before, "v1") == "was changed by kubectl-edit (Update, t)"
    assert drifted(written, "created", None, "v1") == "was deleted"
    assert drifted(written, None, before, "v1") is None  # nothing to put back
    assert drifted(written, "updated", before, "v2") is None  # the spec changed: news
    assert drifted({}, "created", None, "v1") is None  # the first write
    assert drifted(written, "conflict", before, "v1") is None


def test_the_configmap_is_put_back_whole_keys_added_by_hand_taken_out() -> None:
    """A key added by hand would be a file beside the config in the sidecar's config folder:
    before, the repair put `config.yaml` back and left it."""
    wanted = {
        "metadata": {"labels": {"app": "x"}, "ownerReferences": [{"uid": "u"}]},
        "data": {"config.yaml": "v: 1\n"},
    }
    same = {"metadata": {"labels": {"app": "x"}}, "data": {"config.yaml": "v: 1\n"}}
    assert configmap_patch(same, wanted) is None
    added = {**same, "data": {"config.yaml": "v: 1\n", "evil.yaml": "x: 1"}}
    patch = configmap_patch(added, wanted)
    assert patch is not None
    assert patch["data"] == {"config.yaml": "v: 1\n", "evil.yaml": None}  # null: deleted
    assert patch["metadata"]["ownerReferences"] == [{"uid": "u"}]
    binary = {**same, "binaryData": {"blob": "AA=="}}
    assert configmap_patch(binary, wanted)["binaryData"] is None  # type: ignore[index]
    edited = {**same, "data": {"config.yaml": "broken: ["}}
    assert configmap_patch(edited, wanted)["data"] == {"config.yaml": "v: 1\n"}  # type: ignore[index]


def test_a_scaled_object_is_put_back_with_fields_added_by_hand_taken_out() -> None:
    wanted = {
        "metadata": {"labels": {"a": "b"}, "ownerReferences": [{"uid": "u"}]},
        "spec": {"maxReplicaCount": 6, "triggers": [{"type": "prometheus"}]},
    }
    stored = {
        "metadata": {"labels": {"a": "b", "keda": "x"}},
        "spec": {"maxReplicaCount": 6, "triggers": [{"type": "prometheus"}]},
        "status": {"ready": True},
    }
    assert scaled_object_patch(stored, wanted) is None  # KEDA's label and status are no drift
    edited = {**stored, "spec": {**stored["spec"], "maxReplicaCount": 1, "cooldownPeriod": 30}}
    patch = scaled_object_patch(edited, wanted)
    assert patch is not None
    assert patch["spec"] == {**wanted["spec"], "cooldownPeriod": None}
    assert patch["metadata"]["ownerReferences"] == [{"uid": "u"}]


def test_only_another_manager_holding_the_field_is_an_edit() -> None:
    keda = cm(entry(OWN, "2026-01-01T00:00:01Z", "f:spec"), entry("keda", "t", "f:status"))
    assert not edited_by_others(keda, OWN, "f:spec")
    edited = cm(entry(OWN, "t", "f:spec"), entry("kubectl-edit", "t", "f:spec"))
    assert edited_by_others(edited, OWN, "f:spec")


def test_the_webhook_configuration_is_written_only_when_it_lacks_the_webhooks() -> None:
    hooks = [{"name": "pods.x", "failurePolicy": "Ignore"}]
    stored = {
        "metadata": {"resourceVersion": "7"},
        "webhooks": [{"name": "pods.x", "failurePolicy": "Ignore", "timeoutSeconds": 5}],
    }
    assert configuration_patch(stored, hooks) is None  # defaults the server added are kept
    edited = {**stored, "webhooks": [{"name": "pods.x", "failurePolicy": "Fail"}]}
    assert configuration_patch(edited, hooks) == {
        "metadata": {"resourceVersion": "7"},
        "webhooks": hooks,
    }
