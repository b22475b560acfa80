"""The sidecar the operator renders is locked down, and Secrets reach it only as mounted files."""

from __future__ import annotations

import json

import pytest
import yaml

from embedding_proxy_operator.logic import render
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import parse

AUTH = {
    "apiKeysSecretRef": {"name": "client-keys", "key": "keys"},
    "upstreamApiKeySecretRef": {"name": "tei-token", "key": "token"},
}


@pytest.mark.parametrize("native", [True, False], ids=["native", "container"])
@pytest.mark.parametrize("auth", [{}, AUTH], ids=["no-secrets", "secrets"])
def test_sidecar_meets_the_restricted_pod_security_standard(native: bool, auth: dict) -> None:
    container = render.sidecar_container(parse({"targetRef": {"name": "t"}, "auth": auth}), native)
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": names.SIDECAR_UID,
        "runAsGroup": names.SIDECAR_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert {"cpu", "memory"} <= resources["limits"].keys()
    # Nothing it mounts is writable, and nothing comes in through the environment.
    assert all(m["readOnly"] is True for m in container["volumeMounts"])
    assert "env" not in container and "envFrom" not in container


def test_secrets_are_mounted_by_reference_and_the_config_holds_only_paths() -> None:
    spec = parse({"targetRef": {"name": "t"}, "auth": AUTH})
    volumes = {v["name"]: v for v in render.volumes(spec, "p")}
    assert volumes[names.API_KEYS_VOLUME]["secret"] == {
        "secretName": "client-keys",
        "items": [{"key": "keys", "path": names.API_KEYS_FILE}],
    }
    assert volumes[names.UPSTREAM_KEY_VOLUME]["secret"] == {
        "secretName": "tei-token",
        "items": [{"key": "token", "path": names.UPSTREAM_KEY_FILE}],
    }
    container = render.sidecar_container(spec, True)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = render.proxy_config(spec)
    keys_file, upstream_file = config["auth"]["api_keys_file"], config["upstream"]["api_key_file"]
    assert keys_file == f"{mounts[names.API_KEYS_VOLUME]}/{names.API_KEYS_FILE}"
    assert upstream_file == f"{mounts[names.UPSTREAM_KEY_VOLUME]}/{names.UPSTREAM_KEY_FILE}"
    # The ConfigMap names neither the Secrets nor their keys; only the mounted files' paths.
    text = render.configmap("p", "ns", "uid", config)["data"][names.CONFIG_KEY]
    assert yaml.safe_load(text)["auth"] == {"api_keys_file": keys_file}
    for word in ("client-keys", "tei-token", '"keys"', '"token"'):
        assert word not in json.dumps(yaml.safe_load(text)), word
