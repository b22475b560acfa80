"""The Helm chart, rendered by real helm and checked against Kubernetes' own schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from embedding_proxy_operator.logic import rollout

EXAMPLE_GPU = ("--set", "example.enabled=true")
EXAMPLE_CPU = ("--set", "example.enabled=true", "--set", "example.variant=cpu")
NAMESPACED = (
    "--set",
    "operator.watch.mode=namespaced",
    "--set-json",
    'operator.watch.namespaces=["team-a","team-b"]',
)
EVERYTHING = (
    "--api-versions",
    "monitoring.coreos.com/v1",
    "--set",
    "podMonitor.enabled=true",
    "--set",
    "operator.replicas=2",
    "--set",
    "operator.watch.mode=namespaced",
    # The example goes into the release namespace, so the operator must watch it too.
    "--set-json",
    'operator.watch.namespaces=["team-a","embedding-proxy-system"]',
    *EXAMPLE_CPU,
)
CASES = {
    "default": (),
    "example-gpu": EXAMPLE_GPU,
    "example-cpu": EXAMPLE_CPU,
    "namespaced": NAMESPACED,
    "everything": EVERYTHING,
}

# Every grant the operator has, and nothing more: each verb is one the operator or kopf sends
# (tests/operator/test_operator_installed.py checks that against the requests it sends), and this
# table must change with the chart for RBAC to grow. `update` is never sent: writes are patches.
# Secrets are absent on purpose: the sidecar mounts them by name; the operator never reads them.
NAMESPACED_RULES = {
    # kopf lists, watches and patches (finalizer, annotations); the handlers read afresh.
    ("embeddingproxy.io", "embeddingproxies"): {"get", "list", "watch", "patch"},
    # Conditions, config version, pod counts: a merge patch of the status subresource.
    ("embeddingproxy.io", "embeddingproxies/status"): {"patch"},
    ("apps", "deployments"): {"get", "list", "watch", "patch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    # Ready pods to scrape; Webhook mode deletes pods made without the sidecar, to remake them.
    ("", "pods"): {"list", "watch", "delete"},
    ("apps", "replicasets"): {"get"},
    ("", "events"): {"create"},
    # The autoscaler: the target's scale subresource, an HPA to stand back from, KEDA's object.
    ("apps", "deployments/scale"): {"patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch"},
    ("keda.sh", "scaledobjects"): {"get", "list", "watch", "create", "patch", "delete"},
}
# kopf's discovery reads /api and /apis (open to every client) and watches CRDs.
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
# With --namespace, kopf lists and watches namespaces to serve the named ones; with
# --all-namespaces it never does.
NAMESPACES_READ = {("", "namespaces"): {"list", "watch"}}
# Leader election: its Lease, by name but for `create` (the name is in the body).
LEASE = {("coordination.k8s.io", "leases"): {"create", "get", "patch"}}
# The admission webhook's configuration (the chart's own, by name): its CA bundle and webhooks.
WEBHOOK_CONFIG = {
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {
        "get",
        "list",
        "watch",
        "patch",
    }
}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        if "resourceNames" in rule:  # the chart's webhook configuration, the chart's Lease
            assert rule["resources"] in (["mutatingwebhookconfigurations"], ["leases"])
            base = role["metadata"]["name"].removesuffix("-discovery")
            assert rule["resourceNames"] == [base.removesuffix("-leader-election")]
        elif rule["resources"] == ["leases"]:
            assert rule["verbs"] == ["create"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def operator_container(objects: list[dict[str, Any]], kit: Any) -> dict[str, Any]:
    deployments = [
        d
        for d in kit.by_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert len(deployments) == 1
    return deployments[0]["spec"]["template"]["spec"]["containers"][0]


def without_api_versions(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The flags minus `--api-versions X`, which `helm lint` does not take."""
    out: list[str] = []
    skip = False
    for flag in flags:
        if not skip and flag != "--api-versions":
            out.append(flag)
        skip = flag == "--api-versions"
    return tuple(out)


def test_lint_passes(helm: str, kit: Any) -> None:
    for flags in CASES.values():
        lint_flags = without_api_versions(flags)
        result = kit.run_helm(helm, "lint", "--strict", str(kit.chart), *lint_flags)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES)
def test_renders_valid_kubernetes_objects(case: str, render: Any, kit: Any) -> None:
    objects = render(*CASES[case])
    assert objects
    unknown = kit.validate_objects(objects)
    # Only the Prometheus Operator's kind is neither Kubernetes' own nor one of ours.
    assert unknown <= {"PodMonitor"}, unknown


def test_crds_are_valid_custom_resource_definitions(kit: Any) -> None:
    crds = kit.crd_documents()
    names = {c["metadata"]["name"] for c in crds}
    assert names == {"embeddingproxies.embeddingproxy.io"}
    assert kit.validate_objects(crds) == set()


def test_defaults_install_only_the_operator_cluster_wide(render: Any, kit: Any) -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    container = operator_container(objects, kit)
    assert container["command"] == ["embedding-proxy-operator"]
    # The operator's own image; the sidecar it injects by default is image.repository's.
    assert container["image"] == "embedding-proxy-operator:0.1.0"
    assert container["args"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert probe["port"] == "health"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE"]["value"] == "embedding-proxy:0.1.0"
    lease = {k.removeprefix("EMBEDDING_PROXY_OPERATOR_"): v.get("value") for k, v in env.items()}
    assert (lease["LEASE_NAME"], lease["LEASE_SECONDS"]) == (kit.release, "15")  # the full name
    assert lease["LEASE_RENEW_DEADLINE_SECONDS"] == "10"
    assert lease["LEASE_RETRY_SECONDS"] == "2"


@pytest.mark.parametrize(
    ("flags", "operator_image"),
    [
        (("--set", "image.repository=r.example.com/ml/ep", "--set", "image.tag=2.0"),
         "r.example.com/ml/ep-operator:2.0"),
        (("--set", "image.repository=r.example.com/ml/ep", "--set", "image.tag=2.0",
          "--set", "image.operatorRepository=r.example.com/ops/ep-op"),
         "r.example.com/ops/ep-op:2.0"),
    ],
    ids=["derived", "operatorRepository"],
)  # fmt: skip
def test_one_value_names_the_operator_image_and_the_sidecar_it_injects(
    flags: tuple[str, ...], operator_image: str, render: Any, kit: Any, helm: str
) -> None:
    container = operator_container(render(*flags, "--set", "example.enabled=true"), kit)
    assert container["image"] == operator_image
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE"] == "r.example.com/ml/ep:2.0"
    assert env["EMBEDDING_PROXY_OPERATOR_ALLOWED_IMAGES"] == "r.example.com/ml/ep"
    proxy = kit.one(render(*flags, "--set", "example.enabled=true"), "EmbeddingProxy")
    assert proxy["spec"]["sidecar"]["image"] == "r.example.com/ml/ep:2.0"
    # `helm test`'s pod asks the API server with the operator's client: the operator's image.
    with_tests = kit.run_helm(helm, "template", "ep", str(kit.chart), *flags)
    assert with_tests.returncode == 0, with_tests.stderr
    pods = [o for o in kit.load_all(with_tests.stdout) if o["kind"] == "Pod"]
    assert [c["image"] for p in pods for c in p["spec"]["containers"]] == [operator_image]


def test_cluster_wide_rbac_is_least_privilege(render: Any, kit: Any) -> None:
    objects = render()
    role = kit.one(objects, "ClusterRole")
    assert rules_of(role) == {
        **NAMESPACED_RULES,
        **CRD_READ,
        **WEBHOOK_CONFIG,
    }
    binding = kit.one(objects, "ClusterRoleBinding")
    account = kit.one(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert_lease_role(objects, kit)


def assert_lease_role(objects: list[dict[str, Any]], kit: Any) -> None:
    """In both modes, one Role in the release namespace: the Lease, and nothing else."""
    (role,) = [
        r for r in kit.by_kind(objects, "Role") if r["metadata"]["namespace"] == kit.namespace
    ]
    assert rules_of(role) == LEASE
    (binding,) = [
        b
        for b in kit.by_kind(objects, "RoleBinding")
        if b["metadata"]["namespace"] == kit.namespace
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == kit.one(objects, "ServiceAccount")["metadata"]["name"]


def test_namespaced_mode_grants_only_the_watched_namespaces(render: Any, kit: Any) -> None:
    objects = render(*NAMESPACED)
    assert_lease_role(objects, kit)
    roles = [r for r in kit.by_kind(objects, "Role") if r["metadata"]["namespace"] != kit.namespace]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    bindings = [
        b
        for b in kit.by_kind(objects, "RoleBinding")
        if b["metadata"]["namespace"] != kit.namespace
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == kit.namespace
    # Cluster-wide, only what kopf reads to find its resources and namespaces: nothing on the
    # (cluster-wide) webhook configuration, which is not rendered, nor is the webhook.
    assert rules_of(kit.one(objects, "ClusterRole")) == {**CRD_READ, **NAMESPACES_READ}
    assert not kit.by_kind(objects, "MutatingWebhookConfiguration")
    assert [s["metadata"]["name"] for s in kit.by_kind(objects, "Service")] == [
        s["metadata"]["name"]
        for s in kit.by_kind(render(), "Service")
        if not s["metadata"]["name"].endswith("-webhook")
    ]
    container = operator_container(objects, kit)
    assert not [e for e in container["env"] if "WEBHOOK" in e["name"]]
    assert "webhook" not in [p["name"] for p in container["ports"]]
    args = operator_container(objects, kit)["args"]
    assert args[:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args


def test_webhook_injection_needs_cluster_mode(render: Any, kit: Any) -> None:
    with pytest.raises(
        AssertionError, match=r"injection=Webhook needs operator\.watch\.mode=cluster"
    ):
        render(*NAMESPACED, "--set", "operator.injection=Webhook")
    objects = render("--set", "operator.injection=Webhook")
    assert kit.one(objects, "MutatingWebhookConfiguration")
    assert rules_of(kit.one(objects, "ClusterRole"))[
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
    ]


def test_namespaced_mode_defaults_to_the_release_namespace(render: Any, kit: Any) -> None:
    objects = render("--set", "operator.watch.mode=namespaced", namespace="tei")
    watched = [r for r in kit.by_kind(objects, "Role") if rules_of(r) == NAMESPACED_RULES]
    assert [r["metadata"]["namespace"] for r in watched] == ["tei"]
    assert operator_container(objects, kit)["args"][0] == "--namespace=tei"


def test_no_rbac_for_secrets_or_wildcards_in_any_mode(render: Any, kit: Any) -> None:
    for flags in CASES.values():
        objects = render(*flags)
        for role in kit.by_kind(objects, "Role") + kit.by_kind(objects, "ClusterRole"):
            for rule in role["rules"]:
                assert "secrets" not in rule["resources"]
                assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]


def test_two_replicas_get_a_disruption_budget(render: Any, kit: Any) -> None:
    assert not kit.by_kind(render(), "PodDisruptionBudget")
    objects = render("--set", "operator.replicas=2")
    deployment = kit.one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pdb = kit.one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_pod_monitor_only_where_prometheus_operator_is_served(render: Any, kit: Any) -> None:
    assert not kit.by_kind(render("--set", "podMonitor.enabled=true"), "PodMonitor")
    assert not kit.by_kind(render("--api-versions", "monitoring.coreos.com/v1"), "PodMonitor")
    objects = render(
        "--set", "podMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1"
    )
    monitor = kit.proxies_monitor(objects)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    namespaced = kit.proxies_monitor(render(*EVERYTHING))
    assert namespaced["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "embedding-proxy-system"]
    }


@pytest.mark.parametrize("case", CASES)
def test_every_container_is_hardened_and_bounded(case: str, render: Any, kit: Any) -> None:
    pods = kit.pod_specs(render(*CASES[case]))
    assert pods
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod.get("initContainers", []) + pod["containers"]:
            sc = container["securityContext"]
            name = f"{where} container {container['name']}"
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert "memory" in resources["limits"], name


@pytest.mark.parametrize("case", CASES)
def test_every_object_has_the_standard_labels(case: str, render: Any) -> None:
    for obj in render(*CASES[case]):
        labels = obj["metadata"]["labels"]
        for key in [
            "helm.sh/chart",
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
        ]:
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_example_wires_tei_proxy_and_service(variant: str, render: Any, kit: Any) -> None:
    objects = render("--set", "example.enabled=true", "--set", f"example.variant={variant}")
    tei = next(
        d
        for d in kit.by_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "example-tei"
    )
    pod = tei["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    limits = container["resources"]["limits"]
    if variant == "gpu":
        assert container["image"].startswith("ghcr.io/huggingface/text-embeddings-inference:1.")
        assert limits["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "spec"
        ]["tolerations"]
    else:
        assert container["image"].startswith("ghcr.io/huggingface/text-embeddings-inference:cpu-")
        assert "nvidia.com/gpu" not in limits
        assert "tolerations" not in pod["spec"]
    # The GPU variant rolls in place: the sidecar's injection must not wait for a second GPU.
    assert rollout.surge_fact(tei, "tei").status == "False"
    assert "--model-id=BAAI/bge-small-en-v1.5" in container["args"]
    assert "--hostname=0.0.0.0" in container["args"]
    tei_port = container["ports"][0]["containerPort"]
    assert f"--port={tei_port}" in container["args"]

    proxy = kit.one(objects, "EmbeddingProxy")
    assert proxy["metadata"]["namespace"] == tei["metadata"]["namespace"]
    assert proxy["spec"]["targetRef"]["name"] == tei["metadata"]["name"]
    assert proxy["spec"]["upstream"]["url"] == f"http://127.0.0.1:{tei_port}"
    assert proxy["spec"]["sidecar"]["image"] == "embedding-proxy:0.1.0"

    # (The other Service is the operator's webhook.)
    service = kit.one(
        [o for o in objects if not o["metadata"]["name"].endswith("-webhook")], "Service"
    )
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # The Service reaches the proxy's API port, not TEI's.
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == 8000 != tei_port


def test_example_outside_the_watched_namespaces_is_refused(helm: str, kit: Any) -> None:
    # It would never get its sidecar: say so at install rather than leave it waiting.
    result = kit.run_helm(
        helm, "template", "x", str(kit.chart), "-n", "ml", *NAMESPACED, *EXAMPLE_CPU
    )
    assert result.returncode != 0
    assert 'release namespace "ml", which the operator does not watch' in result.stderr


def test_example_spec_values_reach_the_embedding_proxy(render: Any, kit: Any) -> None:
    spec = {"batching": {"maxBatchSize": 64}, "upstream": {"url": "http://127.0.0.1:9000"}}
    objects = render(*EXAMPLE_GPU, "--set-json", f"example.embeddingProxySpec={json.dumps(spec)}")
    proxy = kit.one(objects, "EmbeddingProxy")
    assert proxy["spec"]["batching"] == {"maxBatchSize": 64}
    assert proxy["spec"]["upstream"]["url"] == "http://127.0.0.1:9000"
    assert proxy["spec"]["targetRef"]["name"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--set", "operator.replicas=two"), "at '/operator/replicas': got string, want integer"),
        (("--set", "operator.replica=2"), "additional properties 'replica' not allowed"),
        (("--set", "example.variant=tpu"), "at '/example/variant': value must be one of"),
        (("--set", "operator.watch.mode=everywhere"), "at '/operator/watch/mode'"),
        (("--set", "image.pullPolicy=Sometimes"), "at '/image/pullPolicy'"),
        (("--set-json", 'operator.watch.namespaces=["Team_A"]'), "does not match pattern"),
        # The metrics port's name is the operator's, not a setting.
        (("--set", "podMonitor.portName=metrics"), "additional properties 'portName' not allowed"),
    ],
)
def test_schema_rejects_wrong_values_clearly(
    flags: tuple[str, ...], message: str, helm: str, kit: Any
) -> None:
    for command in ("template", "install"):
        extra = ("--dry-run=client",) if command == "install" else ()
        result = kit.run_helm(helm, command, "x", str(kit.chart), *extra, *flags)
        assert result.returncode != 0
        assert "values don't meet the specifications of the schema" in result.stderr
        assert message in result.stderr, result.stderr


def test_notes_say_what_to_run_next(helm: str, kit: Any) -> None:
    result = kit.run_helm(
        helm, "install", "demo", str(kit.chart), "--dry-run=client", "-n", "ml", *EXAMPLE_CPU
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n ml rollout status deployment/demo-embedding-proxy" in notes
    assert "port-forward service/demo-embedding-proxy-tei 8000:8000" in notes
    assert "curl -s localhost:8000/embed" in notes
