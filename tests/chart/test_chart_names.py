"""Values that become Kubernetes names, labels and selectors, rendered by real helm: a value the
API server (or the operator, at start) would refuse fails `helm template`/`helm install` with the
value's path; the longest fullnameOverride gives names the API server takes, no two alike, and
the operator is told the webhook Service the chart made."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from embedding_proxy_operator.model.settings import Options

# fullnameOverride's most: 63 characters, a DNS-1035 label.
LONGEST = "embedding-proxy-" + "x" * 46 + "a"
EVERYTHING = (
    "--api-versions",
    "monitoring.coreos.com/v1",
    "--set",
    "podMonitor.enabled=true",
    "--set",
    "alerts.enabled=true",
    "--set",
    "dashboards.enabled=true",
    "--set",
    "operator.replicas=2",
    "--set",
    "example.enabled=true",
)
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
WEBHOOK_SERVICE = "EMBEDDING_PROXY_OPERATOR_WEBHOOK_SERVICE"


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize(
    ("flags", "where"),
    [
        # Each went into the operator's environment or an object's metadata, and was refused
        # only when the operator started, or by the API server halfway through the install.
        (
            ("--set-json", 'operator.webhook.namespaceLabels={"team name":"x"}'),
            "namespaceLabels': additional properties 'team name' not allowed",
        ),
        (("--set-json", 'operator.webhook.namespaceLabels={"team":"a b"}'), "namespaceLabels/team"),
        (("--set-json", 'operator.webhook.namespaceLabels={"a/b/c":"x"}'), "namespaceLabels"),
        (("--set", "operator.podLabels.tier=-x"), "/operator/podLabels/tier"),
        (("--set", f"operator.nodeSelector.pool={'v' * 64}"), "/operator/nodeSelector/pool"),
        (
            ("--set-json", 'podMonitor.podSelector={"matchExpressions":[{"key":"a b"}]}'),
            "/podMonitor/podSelector/matchExpressions/0",
        ),
        (("--set", "dashboards.labels.grafana_dashboard=yes please"), "/dashboards/labels"),
        (
            ("--set-json", 'operator.tolerations=[{"key":"gpu type","operator":"Exists"}]'),
            "/operator/tolerations/0",
        ),
        (("--set", "alerts.ruleLabels.Release=x!"), "/alerts/ruleLabels"),
        (("--set", "fullnameOverride=9lives"), "/fullnameOverride"),
        (("--set", "fullnameOverride=ep.v2"), "/fullnameOverride"),
        (("--set", "nameOverride=Embedding"), "/nameOverride"),
        (("--set", "serviceAccount.name=my account"), "/serviceAccount/name"),
        (("--set", "dashboards.namespace=Monitoring"), "/dashboards/namespace"),
        (("--set", "example.cacheClaimName=model cache"), "/example/cacheClaimName"),
        (
            ("--set-json", 'operator.allowedImages=["ghcr.io/acme/ ep"]'),
            "/operator/allowedImages/0",
        ),
        (("--set", "image.repository=ghcr.io/acme/ep:1"), "/image/repository"),
    ],
)
def test_values_that_become_names_or_labels_are_checked(
    flags: tuple[str, ...], where: str, helm: str, kit: Any
) -> None:
    result = kit.run_helm(helm, "template", "x", str(kit.chart), *flags)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


def test_labels_and_images_the_schema_takes_are_what_the_operator_takes(render: Any) -> None:
    labels = {"embeddingproxy.io/webhook": "enabled", "tier": "", "team": "Search_1.a"}
    allowed = ["ghcr.io/acme/", "registry.example.com/ml/embedding-proxy:0.2.0", "localhost:5000/"]
    env = env_of(
        render(
            "--set-json",
            f"operator.webhook.namespaceLabels={json.dumps(labels)}",
            "--set-json",
            f"operator.allowedImages={json.dumps(allowed)}",
        )
    )
    options = Options.from_env(env)
    assert dict(options.webhook_namespace_labels) == labels
    assert list(options.allowed_images) == allowed


def test_the_longest_fullname_gives_valid_and_distinct_names(helm: str, kit: Any) -> None:
    # The `helm test` hooks too: their ServiceAccount must never be named as the operator's.
    result = kit.run_helm(
        helm, "template", "ep", str(kit.chart), "-n", "ml", "--set", f"fullnameOverride={LONGEST}",
        *EVERYTHING,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = kit.load_all(result.stdout)
    kit.validate_objects(objects)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert [k for k, n in Counter(keys).items() if n > 1] == []
    for kind, _, name in keys:
        assert SUBDOMAIN.fullmatch(name) and len(name) <= 63, f"{kind}/{name}"
    services = [o["metadata"]["name"] for o in kit.by_kind(objects, "Service")]
    assert len(services) == 2
    for name in services:
        assert DNS1035.fullmatch(name) and len(name) <= 63, name
    (webhook,) = [s for s in services if s.endswith("-webhook")]
    assert env_of(objects)[WEBHOOK_SERVICE] == f"{webhook}.ml"
    assert kit.one(objects, "MutatingWebhookConfiguration")["metadata"]["name"] == LONGEST
    accounts = [o["metadata"]["name"] for o in kit.by_kind(objects, "ServiceAccount")]
    assert LONGEST in accounts and len(set(accounts)) == 2
    # Where the whole name fits it is kept as it was.
    short = kit.load_all(kit.run_helm(helm, "template", "ep", str(kit.chart)).stdout)
    assert env_of(short)[WEBHOOK_SERVICE] == "ep-embedding-proxy-webhook.default"


def test_two_long_fullnames_that_begin_alike_keep_their_services_apart(render: Any) -> None:
    webhooks = {
        env_of(render("--set", f"fullnameOverride={name}"))[WEBHOOK_SERVICE]
        for name in (LONGEST, LONGEST[:-1] + "b", LONGEST[:-6])
    }
    assert len(webhooks) == 3


def test_a_release_name_that_cannot_name_a_service_is_refused_clearly(helm: str, kit: Any) -> None:
    result = kit.run_helm(helm, "template", "9lives", str(kit.chart))
    assert result.returncode != 0
    assert "9lives-embedding-proxy-webhook" in result.stderr
    assert "set fullnameOverride" in result.stderr
    fixed = kit.run_helm(helm, "template", "9lives", str(kit.chart), "--set", "fullnameOverride=x")
    assert fixed.returncode == 0, fixed.stderr
