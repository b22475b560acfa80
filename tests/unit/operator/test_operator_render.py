"""Rendering: the proxy's config, the ConfigMap, the sidecar, and the JSON Patch in and out."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
import yaml

from embedding_proxy.config.settings import Config
from embedding_proxy_operator.logic import patches, render
from embedding_proxy_operator.logic.plan import release_marked
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import ProxySpec, SpecError, parse

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


def inject(
    dep: Obj, s: ProxySpec, native: bool = True, name: str = "p", sleep_action: bool = True
) -> list[Obj]:
    config = render.proxy_config(s)
    return patches.inject_ops(
        dep,
        name,
        render.sidecar_container(s, native),
        render.volumes(s, name),
        render.restart_hash(config),
        render.termination(s, sleep_action),
    )


def apply(dep: Obj, ops: list[Obj]) -> Obj:
    out = jsonpatch.apply_patch(copy.deepcopy(dep), ops)
    out["metadata"]["resourceVersion"] = str(int(out["metadata"]["resourceVersion"]) + 1)
    return out


FULL = {
    "upstream": {"url": "https://tei.internal:8443", "timeoutMilliseconds": 5000},
    "sidecar": {"ports": {"api": 8100, "metrics": 9100}, "drainSeconds": 3, "logLevel": "debug"},
    "batching": {
        "maxBatchSize": 128,
        "maxWaitMilliseconds": 0,
        "flushMode": "deadline",
        "maxConcurrency": 6,
        "maxConcurrencyLimit": 12,
    },
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


def test_concurrency_is_auto_unless_set() -> None:
    parsed = Config.model_validate(render.proxy_config(spec()))
    assert parsed.batching.max_concurrency == "auto"
    assert parsed.batching.max_concurrency_limit == 32


def test_full_config_carries_every_setting() -> None:
    parsed = Config.model_validate(render.proxy_config(spec(**FULL)))
    assert parsed.server.port == 8100 and parsed.server.metrics_port == 9100
    assert parsed.upstream.url == "https://tei.internal:8443"
    assert parsed.upstream.timeout_ms == 5000
    assert parsed.batching.max_batch_size == 128 and parsed.batching.flush_mode == "deadline"
    assert parsed.batching.max_concurrency == 6 and parsed.batching.max_concurrency_limit == 12
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
    (tei,) = pod["containers"]
    assert {**tei, "lifecycle": None} == {
        **dep["spec"]["template"]["spec"]["containers"][0],
        "lifecycle": None,
    }
    assert [c["name"] for c in pod["initContainers"]] == [names.SIDECAR_NAME]
    assert [v["name"] for v in pod["volumes"]] == ["data", names.CONFIG_VOLUME]
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["annotations"][names.PROXY_ANNOTATION] == "p"
    assert names.RESTART_HASH_ANNOTATION in after["spec"]["template"]["metadata"]["annotations"]
    assert inject(after, spec()) == []


def test_server_defaults_are_no_reason_to_patch() -> None:
    after = apply(deployment(), inject(deployment(), spec()))
    pod = after["spec"]["template"]["spec"]
    pod["initContainers"][0]["terminationMessagePath"] = "/dev/termination-log"
    pod["initContainers"][0]["livenessProbe"]["httpGet"]["scheme"] = "HTTP"
    pod["volumes"][0]["configMap"]["defaultMode"] = 420
    assert inject(after, spec()) == []


def test_resources_are_compared_by_value() -> None:
    written = {
        "requests": {"cpu": "0.5", "memory": "1024Mi"},
        "limits": {"cpu": 1, "memory": "1Gi"},
    }
    s = spec(sidecar={"resources": written})
    after = apply(deployment(), inject(deployment(), s))
    # What the API server stores: the canonical forms, and requests defaulted from limits.
    canonical = {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    pod_of(after)["initContainers"][0]["resources"] = canonical
    assert inject(after, s) == []
    canonical["limits"]["cpu"] = "1001m"
    assert inject(after, s) != []


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
        {"terminationGracePeriodSeconds": 30},
        {"terminationGracePeriodSeconds": 5},
        {"terminationGracePeriodSeconds": 600},
        {
            "containers": [
                {"name": "tei", "lifecycle": {"postStart": {"sleep": {"seconds": 1}}}},
                {"name": "own", "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}},
            ]
        },
    ],
    ids=[
        "bare",
        "with-volumes",
        "with-init-container",
        "default-grace",
        "short-grace",
        "long-grace",
        "own-hooks",
    ],
)
@pytest.mark.parametrize("fields", [{}, FULL], ids=["defaults", "with-secrets"])
def test_remove_gives_back_exactly_the_original(pod: Obj, fields: Obj) -> None:
    original = deployment(**pod)
    original["spec"]["template"]["metadata"]["annotations"] = {"team": "search"}
    injected = apply(original, inject(original, spec(**fields)))
    restored = apply(injected, patches.remove_ops(injected))
    assert restored["spec"] == original["spec"]
    assert "annotations" not in restored["metadata"]
    assert patches.remove_ops(restored) == []


def test_release_takes_out_only_what_the_operator_marked_as_its_own() -> None:
    users_own = {"name": names.SIDECAR_NAME, "image": "users-own:1"}
    beside = deployment()
    beside["spec"]["template"]["spec"]["containers"].append(users_own)
    alone = deployment(containers=[users_own])
    for dep in (beside, alone):
        assert not release_marked(dep, "p")
        assert patches.remove_ops(dep) == []
    injected = apply(deployment(), inject(deployment(), spec()))
    assert release_marked(injected, "p") and not release_marked(injected, "other")
    assert names.SIDECAR_NAME not in str(pod_of(apply(injected, patches.remove_ops(injected))))


def test_user_ports_see_running_containers_only() -> None:
    dep = deployment(
        initContainers=[
            {"name": "once", "ports": [{"containerPort": 8000}]},
            {"name": "logger", "restartPolicy": "Always", "ports": [{"containerPort": 9464}]},
        ]
    )
    assert patches.user_ports(dep) == {80: "tei", 9464: "logger"}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sidecar": {"ports": {"api": 9000, "metrics": 9000}}}, "must differ"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas"),
        ({"upstream": {"url": "http://127.0.0.1:8000"}}, "proxy's own port"),
        ({"upstream": {"url": "tei:80"}}, "upstream.url must be http(s)://"),
        ({"batching": {"maxBatchSize": 0}}, "spec.batching.maxBatchSize"),
        ({"batching": {"maxBatchSzie": 8}}, "unknown field"),
        ({"batching": {"maxConcurrency": "8"}}, "maxConcurrency: must be auto or a number"),
        ({"batching": {"maxConcurrency": 0}}, "maxConcurrency: must be auto or a number"),
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


# ---- termination: TEI outlives the proxy's drain ------------------------------------------

DRAIN = {"sidecar": {"drainSeconds": 10, "graceSeconds": 20}}  # a preStop of 10 + 20 + 2 s


def pod_of(dep: Obj) -> Obj:
    return dep["spec"]["template"]["spec"]


def tei(dep: Obj) -> Obj:
    return next(c for c in pod_of(dep)["containers"] if c["name"] == "tei")


@pytest.mark.parametrize("native", [True, False], ids=["native-sidecar", "container"])
def test_tei_sleeps_through_the_proxys_drain_and_the_grace_period_covers_it(native: bool) -> None:
    after = apply(deployment(), inject(deployment(), spec(**DRAIN), native=native))
    assert tei(after)["lifecycle"] == {"preStop": {"sleep": {"seconds": 32}}}
    assert pod_of(after)["terminationGracePeriodSeconds"] == 32 + render.EXIT_SECONDS
    (sidecar,) = [
        c
        for c in pod_of(after).get("initContainers", []) + pod_of(after)["containers"]
        if c["name"] == names.SIDECAR_NAME
    ]
    if native:
        # SIGTERM comes only after TEI has exited: its preStop hook starts the drain.
        hook = {"exec": {"command": ["embedding-proxy", "drain"]}}
        assert sidecar["lifecycle"] == {"preStop": hook}
    else:
        assert "lifecycle" not in sidecar  # SIGTERM comes at once and starts the drain
    assert inject(after, spec(**DRAIN), native=native) == []


def test_clusters_without_the_sleep_handler_run_sleep_in_the_container() -> None:
    after = apply(deployment(), inject(deployment(), spec(**DRAIN), sleep_action=False))
    assert tei(after)["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "32"]}}}
    assert inject(after, spec(**DRAIN), sleep_action=False) == []
    # The cluster upgraded: the handler that needs no binary takes over.
    upgraded = apply(after, inject(after, spec(**DRAIN)))
    assert tei(upgraded)["lifecycle"] == {"preStop": {"sleep": {"seconds": 32}}}


def test_a_users_own_hook_and_longer_grace_period_are_kept() -> None:
    own = {"httpGet": {"path": "/quiesce", "port": 80}}
    dep = deployment(terminationGracePeriodSeconds=120)
    tei(dep)["lifecycle"] = {"preStop": own}
    after = apply(dep, inject(dep, spec(**DRAIN)))
    assert tei(after)["lifecycle"] == {"preStop": own}
    assert pod_of(after)["terminationGracePeriodSeconds"] == 120
    assert names.TERMINATION_ANNOTATION not in after["metadata"]["annotations"]
    assert (
        patches.remove_ops(after) and apply(after, patches.remove_ops(after))["spec"] == dep["spec"]
    )


def test_a_drain_change_moves_the_hook_and_the_grace_period_both_ways() -> None:
    dep = deployment(terminationGracePeriodSeconds=20)
    short = apply(dep, inject(dep, spec(**DRAIN)))
    assert pod_of(short)["terminationGracePeriodSeconds"] == 42
    longer = apply(short, inject(short, spec(sidecar={"drainSeconds": 30, "graceSeconds": 60})))
    assert tei(longer)["lifecycle"]["preStop"] == {"sleep": {"seconds": 92}}
    assert pod_of(longer)["terminationGracePeriodSeconds"] == 102
    # Back to a drain that the user's own 20 s covered: their value, not the operator's.
    tiny = apply(longer, inject(longer, spec(sidecar={"drainSeconds": 0, "graceSeconds": 1})))
    assert tei(tiny)["lifecycle"]["preStop"] == {"sleep": {"seconds": 3}}
    assert pod_of(tiny)["terminationGracePeriodSeconds"] == 20
    assert apply(tiny, patches.remove_ops(tiny))["spec"] == dep["spec"]


def test_what_the_user_changed_after_injection_stays_theirs_on_removal() -> None:
    dep = deployment()
    after = apply(dep, inject(dep, spec(**DRAIN)))
    pod_of(after)["terminationGracePeriodSeconds"] = 300
    tei(after)["lifecycle"]["preStop"] = {"exec": {"command": ["/bin/quiesce"]}}
    restored = apply(after, patches.remove_ops(after))
    assert pod_of(restored)["terminationGracePeriodSeconds"] == 300
    assert tei(restored)["lifecycle"] == {"preStop": {"exec": {"command": ["/bin/quiesce"]}}}
    assert names.SIDECAR_NAME not in str(pod_of(restored))
    assert "annotations" not in restored["metadata"]


@pytest.mark.parametrize(
    "text",
    [
        '{"preStop":[{"a":1}]}',
        "[[[",
        "[" * 100_000,
        '["tei"]',
        '{"preStop":"tei"}',
        '{"grace":{"was":true,"set":30}}',
        '{"grace":{"set":"30"}}',
        '{"grace":{"was":null,"set":42},"more":1}',
    ],
)
def test_a_tampered_termination_record_is_taken_as_absent(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    after = apply(deployment(), inject(deployment(), spec(**DRAIN)))
    after["metadata"]["annotations"][names.TERMINATION_ANNOTATION] = text
    assert patches.termination_record(after) == {}
    # Planning goes on, and the hook it can no longer tell from the user's own stays.
    inject(after, spec(**DRAIN))
    restored = apply(after, patches.remove_ops(after))
    assert "preStop" in tei(restored)["lifecycle"]
    assert len([r for r in caplog.records if names.TERMINATION_ANNOTATION in r.message]) == 1


def test_the_operators_own_termination_record_is_read() -> None:
    after = apply(deployment(), inject(deployment(), spec(**DRAIN)))
    record = patches.termination_record(after)
    assert record["preStop"] == ["tei"] and record["grace"] == {"was": None, "set": 42}


def test_every_container_beside_the_proxy_outlives_it() -> None:
    dep = deployment()
    pod_of(dep)["containers"].append({"name": "logs", "image": "shipper"})
    after = apply(dep, inject(dep, spec(**DRAIN), native=False))
    hooks = {c["name"]: c.get("lifecycle") for c in pod_of(after)["containers"]}
    assert hooks["tei"] == hooks["logs"] == {"preStop": {"sleep": {"seconds": 32}}}
    assert hooks[names.SIDECAR_NAME] is None


@pytest.mark.parametrize(
    ("handler", "seconds"),
    [
        ({"sleep": {"seconds": 7}}, 7),
        ({"exec": {"command": ["sleep", "7"]}}, 7),
        ({"exec": {"command": ["sh", "-c", "sleep 7"]}}, None),
        ({"httpGet": {"path": "/", "port": 80}}, None),
        ({"exec": {"command": ["sleep", "7"]}, "sleep": {"seconds": 7}}, None),
        ("sleep", None),
    ],
)
def test_only_the_operators_own_hook_forms_are_recognised(
    handler: Any, seconds: int | None
) -> None:
    assert render.pre_stop_seconds(handler) == seconds
