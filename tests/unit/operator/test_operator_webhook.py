"""Webhook mode's pure parts: one rendering for the pod and the template, the Deployment a pod
comes from, when the template's restart annotation moves, the configuration's scope, and the
certificates."""

from __future__ import annotations

import copy
import datetime
import ipaddress
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from embedding_proxy_operator.logic import certs, injection, patches
from embedding_proxy_operator.logic.plan import plan
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.settings import Options

Obj = dict[str, Any]
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)


def proxy(**spec: Any) -> Obj:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"targetRef": {"name": "tei"}, **spec},
    }


def template() -> Obj:
    return {
        "metadata": {"labels": {"app": "tei"}},
        "spec": {
            "containers": [{"name": "tei", "ports": [{"containerPort": 80}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def deployment(annotations: Obj | None = None) -> Obj:
    tpl = template()
    if annotations:
        tpl["metadata"]["annotations"] = annotations
    return {
        "metadata": {"name": "tei", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"selector": {"matchLabels": {"app": "tei"}}, "template": tpl},
    }


def pod(rs: str = "tei-5f9c7d", hash_: str = "5f9c7d") -> Obj:
    tpl = template()
    return {
        "metadata": {
            "generateName": f"{rs}-",
            "namespace": "ns",
            "labels": {**tpl["metadata"]["labels"], "pod-template-hash": hash_},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True}
            ],
        },
        "spec": tpl["spec"],
    }


def test_the_pod_gets_exactly_what_deployment_mode_puts_into_the_template() -> None:
    injected_template = jsonpatch.apply_patch(deployment(), plan(proxy(), deployment(), True).ops)[
        "spec"
    ]["template"]
    result, ops = injection.pod_plan(proxy(injection="Webhook"), pod(), True, True, ())
    assert result.facts[-1].status == "True"
    injected_pod = jsonpatch.apply_patch(pod(), ops)
    assert injected_pod["spec"] == injected_template["spec"]
    # The pod's metadata is its own: the restart annotation comes from the template.
    assert injected_pod["metadata"] == pod()["metadata"]
    # Injecting twice changes nothing.
    assert injection.pod_plan(proxy(), injected_pod, True, True, ())[1] == []


def test_a_refused_spec_injects_nothing() -> None:
    result, ops = injection.pod_plan(
        proxy(sidecar={"image": "evil:1"}), pod(), True, True, ("embedding-proxy",)
    )
    assert ops == [] and result.facts[-1].reason == "ImageNotAllowed"
    taken = pod()
    taken["spec"]["containers"][0]["ports"] = [{"containerPort": 8000}]
    assert injection.pod_plan(proxy(), taken, True, True, ())[1] == []


@pytest.mark.parametrize(
    ("rs", "hash_", "kind", "expected"),
    [
        ("tei-5f9c7d", "5f9c7d", "ReplicaSet", "tei"),
        ("my-tei-v2-5f9c7d", "5f9c7d", "ReplicaSet", "my-tei-v2"),
        ("tei-5f9c7d", "other", "ReplicaSet", None),  # not the Deployment controller's naming
        ("tei-5f9c7d", "5f9c7d", "StatefulSet", None),
        ("-5f9c7d", "5f9c7d", "ReplicaSet", None),
    ],
)
def test_a_pod_is_mapped_to_its_deployment(
    rs: str, hash_: str, kind: str, expected: str | None
) -> None:
    p = pod(rs, hash_)
    p["metadata"]["ownerReferences"][0]["kind"] = kind
    assert injection.deployment_of(p) == expected
    orphan = pod(rs, hash_)
    orphan["metadata"]["ownerReferences"][0]["controller"] = False
    assert injection.deployment_of(orphan) is None


def test_webhook_mode_leaves_the_template_alone_until_a_restart_is_needed() -> None:
    first = plan(proxy(injection="Webhook"), deployment(), True)
    assert first.injection == "Webhook" and first.injection_hash and first.ops == []
    assert first.facts[-1].reason == "Webhook"
    # A live change: same hash, still nothing.
    live = plan(proxy(injection="Webhook", batching={"maxBatchSize": 64}), deployment(), True)
    assert live.injection_hash == first.injection_hash and live.ops == []
    # A change the proxy reads only at start: the template's annotation rolls the pods.
    changed = plan(
        proxy(injection="Webhook", sidecar={"logLevel": "debug"}),
        deployment(),
        True,
        previous_hash=first.injection_hash,
    )
    assert changed.injection_hash != first.injection_hash
    rolled = jsonpatch.apply_patch(deployment(), changed.ops)
    annotations = rolled["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {names.RESTART_HASH_ANNOTATION: changed.injection_hash}
    assert rolled["spec"]["template"]["spec"] == template()["spec"]
    # Once there, it is only moved again by the next change.
    again = plan(
        proxy(injection="Webhook", sidecar={"logLevel": "debug"}),
        rolled,
        True,
        previous_hash=changed.injection_hash,
    )
    assert again.ops == []


def test_switching_from_deployment_mode_takes_the_sidecar_out_of_the_template() -> None:
    injected = jsonpatch.apply_patch(deployment(), plan(proxy(), deployment(), True).ops)
    switched = plan(proxy(injection="Webhook"), injected, True)
    after = jsonpatch.apply_patch(injected, switched.ops)
    assert patches.find_sidecar(after) is None and patches.owner_of(after) is None
    assert after["spec"]["template"]["spec"] == template()["spec"]
    assert patches.restart_annotation(after) == switched.injection_hash
    # The operator's default decides where the spec does not.
    assert plan(proxy(), deployment(), True, default_injection="Webhook").injection == "Webhook"


def test_the_configuration_is_scoped_narrowly() -> None:
    hooks = injection.webhooks("https://127.0.0.1:9443", "", "Q0E=", "Ignore", (), "ops")
    pods_hook, probe = hooks
    assert pods_hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert pods_hook["sideEffects"] == "None" and pods_hook["timeoutSeconds"] == 5
    assert "ReplicaSet" in pods_hook["matchConditions"][0]["expression"]
    excluded = pods_hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert {"kube-system", "ops"} <= set(excluded)
    assert pods_hook["clientConfig"] == {"url": "https://127.0.0.1:9443/pods", "caBundle": "Q0E="}
    assert probe["failurePolicy"] == "Ignore"
    assert probe["objectSelector"] == {"matchLabels": {injection.PROBE_LABEL: "true"}}
    (watched, _) = injection.webhooks("", "op-webhook.sys", "Q0E=", "Fail", ("a", "sys"), "sys")
    assert watched["failurePolicy"] == "Fail"
    # The operator's own namespace is never sent to the webhook, even when it is watched.
    key = "kubernetes.io/metadata.name"
    assert watched["namespaceSelector"]["matchExpressions"] == [
        {
            "key": key,
            "operator": "NotIn",
            "values": ["kube-node-lease", "kube-public", "kube-system", "sys"],
        },
        {"key": key, "operator": "In", "values": ["a", "sys"]},
    ]
    (labelled, _) = injection.webhooks("", "w.sys", "Q0E=", "Fail", (), "sys", [("on", "yes")])
    assert labelled["namespaceSelector"]["matchLabels"] == {"on": "yes"}
    assert labelled["namespaceSelector"]["matchExpressions"][0]["operator"] == "NotIn"
    assert watched["clientConfig"]["service"] == {
        "namespace": "sys",
        "name": "op-webhook",
        "port": 443,
        "path": "/pods",
    }


def test_escaped_pods_are_the_live_ones_without_the_sidecar() -> None:
    selector = {"matchLabels": {"app": "tei"}}
    plain, done = pod(), pod()
    plain["metadata"]["name"], done["metadata"]["name"] = "a", "b"
    done["status"] = {"phase": "Succeeded"}
    injected = jsonpatch.apply_patch(pod(), injection.pod_plan(proxy(), pod(), True, True, ())[1])
    injected["metadata"]["name"] = "c"
    found = injection.escaped([plain, done, injected], selector)
    assert [p["metadata"]["name"] for p in found] == ["a"]


@pytest.mark.parametrize(
    ("spec", "containers", "reason"),
    [
        ({}, [{"name": "tei", "ports": [{"containerPort": 8000}]}], "PortConflict"),
        ({}, [{"name": "tei"}, {"name": names.SIDECAR_NAME, "image": "own"}], "NameConflict"),
        ({}, [], "TargetHasNoContainers"),
        ({"sidecar": {"image": "elsewhere/proxy:1"}}, [{"name": "tei"}], "ImageNotAllowed"),
    ],
)
def test_where_the_plan_refuses_no_pod_has_escaped_the_webhook(
    spec: Obj, containers: list[Obj], reason: str
) -> None:
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"] = containers
    result = plan(
        proxy(injection="Webhook", **spec), dep, True, allowed_images=("embedding-proxy",)
    )
    said = {f.type: f for f in result.facts}[names.SIDECAR_INJECTED]
    assert (said.status, said.reason) == ("False", reason)
    assert not injection.webhook_injects(result)
    assert injection.webhook_injects(plan(proxy(injection="Webhook"), deployment(), True))
    assert not injection.webhook_injects(plan(proxy(), deployment(), True))


def test_a_ready_escaped_pod_is_deleted_only_while_no_replica_is_missing() -> None:
    ready = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    starting = {"status": {"phase": "Pending"}}
    assert injection.may_delete_ready(2, 2, [])
    assert injection.may_delete_ready(2, 2, [ready])
    # The pod deleted last poll is not yet replaced: "every injected pod is ready" of none.
    assert not injection.may_delete_ready(1, 2, [])
    assert not injection.may_delete_ready(2, 2, [ready, starting])


def test_certificates_name_the_service_and_chain_to_the_ca() -> None:
    hosts = certs.service_names("ep-webhook.sys")
    assert hosts == [
        "ep-webhook",
        "ep-webhook.sys",
        "ep-webhook.sys.svc",
        "ep-webhook.sys.svc.cluster.local",
    ]
    issued = certs.issue([*hosts, "127.0.0.1"], datetime.timedelta(days=30), NOW)
    leaf, ca_in_chain = x509.load_pem_x509_certificates(issued.cert_pem)
    ca = x509.load_pem_x509_certificate(issued.ca_pem)
    assert ca_in_chain == ca
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == hosts
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert leaf.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert leaf.not_valid_before_utc < NOW
    with pytest.raises(ValueError):
        certs.service_names("no-namespace")


def test_the_bundle_keeps_other_replicas_valid_cas_and_drops_expired_ones() -> None:
    day = datetime.timedelta(days=1)
    mine = certs.issue(["a"], 30 * day, NOW).ca_pem
    other = certs.issue(["a"], 30 * day, NOW).ca_pem
    expired = certs.issue(["a"], day, NOW - 2 * day).ca_pem
    bundle = certs.bundle([mine], other + expired, NOW)
    kept = x509.load_pem_x509_certificates(bundle)
    fingerprints = [c.fingerprint(hashes.SHA256()) for c in kept]
    assert fingerprints == [
        x509.load_pem_x509_certificate(mine).fingerprint(hashes.SHA256()),
        x509.load_pem_x509_certificate(other).fingerprint(hashes.SHA256()),
    ]
    many = b"".join(certs.issue(["a"], 30 * day, NOW).ca_pem for _ in range(10))
    assert len(x509.load_pem_x509_certificates(certs.bundle([mine], many, NOW, keep=8))) == 8
    assert x509.load_pem_x509_certificates(certs.bundle([mine], many, NOW))[0] == (
        x509.load_pem_x509_certificate(mine)
    )


def test_options_for_the_webhook() -> None:
    options = Options.from_env(
        {
            "EMBEDDING_PROXY_OPERATOR_INJECTION": "Webhook",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "9443",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_SERVICE": "ep-webhook.sys",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_NAMESPACES": "a, b",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_FAILURE_POLICY": "Fail",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_NAMESPACE_LABELS": "embeddingproxy.io/webhook=on,",
        }
    )
    assert options.webhook_namespace_labels == (("embeddingproxy.io/webhook", "on"),)
    assert (options.injection, options.webhook_port) == ("Webhook", 9443)
    assert options.webhook_namespaces == ("a", "b") and options.webhook_failure_policy == "Fail"
    assert Options.from_env({}).injection == "Deployment"
    for bad in (
        {"EMBEDDING_PROXY_OPERATOR_INJECTION": "Sidecar"},
        {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "70000"},
        {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_FAILURE_POLICY": "ignore"},
        {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_NAMESPACE_LABELS": "novalue"},
        {"EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "9443"},  # reached how?
        {
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT": "9443",
            "EMBEDDING_PROXY_OPERATOR_WEBHOOK_URL": "http://127.0.0.1:9443",
        },
    ):
        with pytest.raises(ValueError):
            Options.from_env(bad)


def test_the_template_copy_never_leaks_into_the_pod_plan() -> None:
    original = pod()
    kept = copy.deepcopy(original)
    injection.pod_plan(proxy(), original, True, True, ())
    assert original == kept


def test_webhook_injection_without_the_webhook_writes_nothing_and_says_why() -> None:
    # A namespaced operator runs no webhook (it would be cluster-wide): nothing is written.
    result = plan(proxy(injection="Webhook"), deployment(), True, webhook=False)
    assert result.ops == [] and result.configmap is None
    injected = [f for f in result.facts if f.type == names.SIDECAR_INJECTED]
    assert injected[0].status == "False" and injected[0].reason == "WebhookUnavailable"
    assert "cluster mode" in injected[0].message
    assert [w.reason for w in result.warnings] == ["WebhookUnavailable"]
    # Deployment mode is unaffected.
    assert plan(proxy(injection="Deployment"), deployment(), True, webhook=False).ops


def test_only_a_replicaset_of_the_deployment_controls_by_uid() -> None:
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "uid": "d1", "controller": True}
    rs = {"metadata": {"ownerReferences": [ref]}}
    assert injection.controlled_by(rs, "Deployment", "d1")
    assert not injection.controlled_by(rs, "Deployment", "d2")
    assert not injection.controlled_by(rs, "StatefulSet", "d1")
    assert not injection.controlled_by(rs, "Deployment", None)
    not_controller = {"metadata": {"ownerReferences": [{**ref, "controller": False}]}}
    assert not injection.controlled_by(not_controller, "Deployment", "d1")
    assert not injection.controlled_by({"metadata": {"labels": {"app": "tei"}}}, "Deployment", "d1")
