"""Rendering: the proxy's config, the ConfigMap, the sidecar, and the JSON Patch in and out."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
import yaml

from embedding_proxy.config import Config
from embedding_proxy_operator import names, render
from embedding_proxy_operator.spec import ProxySpec, SpecError, parse

Obj = dict[str, Any]


def spec(**fields: Any) -> ProxySpec:
    return parse({"targetRef": {"name": "tei"}, **fields})


def deployment(**pod: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tei", "namespace": "ns", "resourceVersion": "7"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "tei"}},
            "template": {
                "metadata": {"labels": {"app": "tei"}},
                "spec": {
                    "containers": [
                        {"name": "tei", "image": "tei", "ports": [{"containerPort": 80}]}
                    ],
                    **pod,
                },
            },
        },
    }


def inject(dep: Obj, s: ProxySpec, native: bool = True, name: str = "p") -> list[Obj]:
    config = render.proxy_config(s)
    return render.inject_ops(
        dep,
        name,
        render.sidecar_container(s, native),
        render.volumes(s, name),
        render.restart_hash(config),
    )


def apply(dep: Obj, ops: list[Obj]) -> Obj:
    out = jsonpatch.apply_patch(copy.deepcopy(dep), ops)
    out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
    return out


FULL = {
    "upstream": {"url": "https://tei.internal:8443", "timeoutMilliseconds": 5000},
    "sidecar": {"ports": {"api": 8100, "metrics": 9100}, "drainSeconds": 3, "logLevel": "debug"},
    "batching": {"maxBatchSize": 128, "maxWaitMilliseconds": 0, "flushMode": "deadline"},
    "limits": {"requestsPerSecond": 50, "burst": 100},
    "auth": {
        "apiKeysSecretRef": {"name": "keys", "key": "k"},
        "upstreamApiKeySecretRef": {"name": "tei", "key": "t"},
    },
}


@pytest.mark.parametrize("fields", [{}, FULL], ids=["defaults", "everything-set"])
def test_the_config_is_one_the_proxy_accepts(fields: Obj) -> None:
    config = render.proxy_config(spec(**fields))
    text = render.configmap("p", "ns", "uid-1", config)["data"][names.CONFIG_KEY]
    parsed = Config.model_validate(yaml.safe_load(text))
    assert parsed.version == config["version"]
    assert parsed.server.metrics_port != parsed.server.port


def test_full_config_carries_every_setting() -> None:
    parsed = Config.model_validate(render.proxy_config(spec(**FULL)))
    assert parsed.server.port == 8100 and parsed.server.metrics_port == 9100
    assert parsed.upstream.url == "https://tei.internal:8443"
    assert parsed.upstream.timeout_ms == 5000
    assert parsed.batching.max_batch_size == 128 and parsed.batching.flush_mode == "deadline"
    assert parsed.limits.rate_per_second == 50 and parsed.limits.rate_burst == 100
    assert str(parsed.auth.api_keys_file) == f"{names.API_KEYS_DIR}/{names.API_KEYS_FILE}"
    assert str(parsed.upstream.api_key_file).startswith(names.UPSTREAM_KEY_DIR)


def test_version_follows_content_and_restart_hash_ignores_live_settings() -> None:
    base = render.proxy_config(spec())
    same = render.proxy_config(spec())
    tuned = render.proxy_config(spec(batching={"maxBatchSize": 8}, limits={"burst": 3}))
    moved = render.proxy_config(spec(sidecar={"ports": {"api": 8001}}))
    assert base["version"] == same["version"] and len(base["version"]) == 10
    assert tuned["version"] != base["version"]
    assert render.restart_hash(tuned) == render.restart_hash(base)
    assert render.restart_hash(moved) != render.restart_hash(base)


def test_configmap_is_owned_and_labelled_and_holds_no_secret() -> None:
    cm = render.configmap("p", "ns", "uid-1", render.proxy_config(spec(**FULL)))
    assert cm["metadata"]["name"] == names.configmap_name("p")
    (owner,) = cm["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-1" and owner["kind"] == names.KIND
    assert cm["metadata"]["labels"][names.LABEL_PROXY] == "p"
    text = cm["data"][names.CONFIG_KEY]
    assert "secretName" not in text and "keys" not in yaml.safe_load(text)["auth"].get(
        "api_keys", []
    )


def test_sidecar_is_hardened_and_bounded() -> None:
    c = render.sidecar_container(spec(), native=True)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["restartPolicy"] == "Always"
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8000}
    assert {p["containerPort"] for p in c["ports"]} == {8000, 9464}
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == names.CONFIG_DIR and "subPath" not in mount
    assert "restartPolicy" not in render.sidecar_container(spec(), native=False)


def test_inject_adds_only_its_own_and_is_idempotent() -> None:
    dep = deployment(volumes=[{"name": "data", "emptyDir": {}}])
    ops = inject(dep, spec())
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    after = apply(dep, ops)
    pod = after["spec"]["template"]["spec"]
    assert pod["containers"] == dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in pod["initContainers"]] == [names.SIDECAR_NAME]
    assert [v["name"] for v in pod["volumes"]] == ["data", names.CONFIG_VOLUME]
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["annotations"] == {names.PROXY_ANNOTATION: "p"}
    assert names.RESTART_HASH_ANNOTATION in after["spec"]["template"]["metadata"]["annotations"]
    assert inject(after, spec()) == []


def test_server_defaults_are_no_reason_to_patch() -> None:
    after = apply(deployment(), inject(deployment(), spec()))
    pod = after["spec"]["template"]["spec"]
    pod["initContainers"][0]["terminationMessagePath"] = "/dev/termination-log"
    pod["initContainers"][0]["livenessProbe"]["httpGet"]["scheme"] = "HTTP"
    pod["volumes"][0]["configMap"]["defaultMode"] = 420
    assert inject(after, spec()) == []


def test_batching_change_leaves_the_template_alone_and_restart_changes_roll_it() -> None:
    after = apply(deployment(), inject(deployment(), spec()))
    assert inject(after, spec(batching={"maxBatchSize": 1}, limits={"burst": 5})) == []
    for changed in (
        spec(sidecar={"image": "embedding-proxy:9"}),
        spec(upstream={"url": "http://127.0.0.1:3000"}),
        spec(sidecar={"resources": {"limits": {"memory": "2Gi"}}}),
    ):
        assert inject(after, changed), changed


def test_switching_mode_moves_the_sidecar() -> None:
    native = apply(deployment(), inject(deployment(), spec()))
    regular = apply(native, inject(native, spec(sidecar={"mode": "Container"}), native=False))
    pod = regular["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["tei", names.SIDECAR_NAME]
    back = apply(regular, inject(regular, spec()))
    assert [c["name"] for c in back["spec"]["template"]["spec"]["initContainers"]] == [
        names.SIDECAR_NAME
    ]


@pytest.mark.parametrize(
    "pod",
    [
        {},
        {"volumes": [{"name": "data", "emptyDir": {}}]},
        {"initContainers": [{"name": "fetch-model", "image": "busybox"}]},
    ],
    ids=["bare", "with-volumes", "with-init-container"],
)
@pytest.mark.parametrize("fields", [{}, FULL], ids=["defaults", "with-secrets"])
def test_remove_gives_back_exactly_the_original(pod: Obj, fields: Obj) -> None:
    original = deployment(**pod)
    original["spec"]["template"]["metadata"]["annotations"] = {"team": "search"}
    injected = apply(original, inject(original, spec(**fields)))
    restored = apply(injected, render.remove_ops(injected))
    assert restored["spec"] == original["spec"]
    assert "annotations" not in restored["metadata"]
    assert render.remove_ops(restored) == []


def test_user_ports_see_running_containers_only() -> None:
    dep = deployment(
        initContainers=[
            {"name": "once", "ports": [{"containerPort": 8000}]},
            {"name": "logger", "restartPolicy": "Always", "ports": [{"containerPort": 9464}]},
        ]
    )
    assert render.user_ports(dep) == {80: "tei", 9464: "logger"}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sidecar": {"ports": {"api": 9000, "metrics": 9000}}}, "must differ"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas"),
        ({"upstream": {"url": "http://127.0.0.1:8000"}}, "proxy's own port"),
        ({"upstream": {"url": "tei:80"}}, "http(s) URL"),
        ({"batching": {"maxBatchSize": 0}}, "spec.batching.maxBatchSize"),
        ({"batching": {"maxBatchSzie": 8}}, "unknown field"),
    ],
)
def test_bad_specs_are_named(fields: Obj, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        spec(**fields)


def test_secret_keys_have_defaults() -> None:
    s = spec(auth={"apiKeysSecretRef": {"name": "a"}, "upstreamApiKeySecretRef": {"name": "b"}})
    by_name = {v["name"]: v for v in render.volumes(s, "p")}
    assert by_name[names.API_KEYS_VOLUME]["secret"]["items"][0]["key"] == "api-keys"
    assert by_name[names.UPSTREAM_KEY_VOLUME]["secret"]["items"][0]["key"] == "api-key"
