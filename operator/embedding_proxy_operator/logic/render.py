"""Pure rendering: the proxy's config file, its ConfigMap, the sidecar container, its volumes and
the pod's termination timing. `patches` puts them into (or takes them out of) a Deployment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..model import names
from ..model.spec import ProxySpec
from . import cpu_limit

Obj = dict[str, Any]

# Sections the proxy applies live when the file changes; everything else needs a restart.
LIVE_SECTIONS = ("batching", "limits", "auth")

# Termination (docs/operator.md, "How a pod shuts down"): the pod's other containers sleep in
# their preStop hook through the proxy's drainSeconds + graceSeconds and this margin (for the
# proxy's own preStop exec to start and the last answers to leave) before they get SIGTERM ...
PRE_STOP_MARGIN_SECONDS = 2
# ... and the pod's grace period leaves this long after that for TEI to exit on SIGTERM and then
# the proxy, drained by then, on its own.
EXIT_SECONDS = 10
# What the API server fills in when a pod spec leaves terminationGracePeriodSeconds out.
DEFAULT_GRACE_SECONDS = 30


def _digest(data: Any, length: int = 10) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def proxy_config(spec: ProxySpec) -> Obj:
    """The proxy's config (layout of the proxy's `config.settings.Config`), `version` included."""
    side, up, bat, lim = spec.sidecar, spec.upstream, spec.batching, spec.limits
    config: Obj = {
        "server": {
            "host": "0.0.0.0",
            "port": side.ports.api,
            "metrics_port": side.ports.metrics,
            "workers": cpu_limit.workers(side.workers, side.resources),
            "max_body_bytes": side.max_body_bytes,
            "drain_seconds": side.drain_seconds,
            "grace_seconds": side.grace_seconds,
            "request_timeout_ms": side.request_timeout_milliseconds,
            "log_level": side.log_level,
        },
        "upstream": {
            "url": up.url,
            "timeout_ms": up.timeout_milliseconds,
            "connect_timeout_ms": up.connect_timeout_milliseconds,
            "max_connections": up.max_connections,
        },
        "batching": {
            "max_batch_size": bat.max_batch_size,
            "max_batch_tokens": bat.max_batch_tokens,
            "max_wait_ms": bat.max_wait_milliseconds,
            "max_concurrency": bat.max_concurrency,
            "max_concurrency_limit": bat.max_concurrency_limit,
            "queue_capacity": bat.queue_capacity,
            "flush_mode": bat.flush_mode,
        },
        "auth": {},
        "limits": {
            "max_inputs_per_request": lim.max_inputs_per_request,
            "max_input_chars": lim.max_input_chars,
            "rate_per_second": lim.requests_per_second,
            "rate_burst": lim.burst,
        },
    }
    config["batching"].update(_lanes(spec))
    # Secrets are mounted as files; the config holds only their paths.
    if spec.auth.api_keys_secret_ref:
        config["auth"]["api_keys_file"] = f"{names.API_KEYS_DIR}/{names.API_KEYS_FILE}"
    if spec.auth.upstream_api_key_secret_ref:
        config["upstream"]["api_key_file"] = f"{names.UPSTREAM_KEY_DIR}/{names.UPSTREAM_KEY_FILE}"
    return {"version": _digest(config), **config}


def _lanes(spec: ProxySpec) -> Obj:
    """The lane settings, only where the spec has lanes, so that a spec without them renders
    the config (and its version) it rendered before lanes existed."""
    bat, out = spec.batching, {}
    if bat.lanes:
        out["lanes"] = [
            {
                "name": lane.name,
                "queue_capacity": lane.queue_capacity,
                "min_share": lane.min_share,
                **({"weight": lane.weight} if lane.weight is not None else {}),
            }
            for lane in bat.lanes
        ]
    if bat.default_lane is not None:
        out["default_lane"] = bat.default_lane
    if spec.autoscaling.lanes:
        # The lanes embedding_proxy_queue_depth_avg counts: every autoscaler reads that metric.
        out["signal_lanes"] = list(spec.autoscaling.lanes)
    return out


def restart_hash(config: Mapping[str, Any]) -> str:
    """Hash of the settings a running proxy does not reload: a change rolls the pods."""
    return _digest({k: v for k, v in config.items() if k not in (*LIVE_SECTIONS, "version")})


def injection_hash(
    container: Mapping[str, Any],
    volume_list: list[Obj],
    term: Termination,
    config: Mapping[str, Any],
) -> str:
    """Webhook mode: a hash of everything the webhook puts into a pod and of the settings the
    proxy reads only at start. A change rolls the pods (by the template's restart annotation),
    so that each new pod is injected afresh."""
    return _digest(
        {
            "container": container,
            "volumes": volume_list,
            "preStop": term.pre_stop,
            "grace": term.grace_seconds,
            "restart": restart_hash(config),
        }
    )


def owned_metadata(object_name: str, proxy: str, namespace: str, uid: str | None) -> Obj:
    """Metadata of an object the operator writes for the EmbeddingProxy `proxy`: our labels, and
    (when its uid is known) an owner reference, so that garbage collection removes the object
    with its EmbeddingProxy even if the operator is away."""
    meta: Obj = {
        "name": object_name,
        "namespace": namespace,
        "labels": {
            names.LABEL_MANAGED_BY: names.FIELD_MANAGER,
            names.LABEL_PART_OF: names.PART_OF,
            names.LABEL_PROXY: proxy,
        },
    }
    if uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": proxy,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return meta


def configmap(name: str, namespace: str, uid: str | None, config: Mapping[str, Any]) -> Obj:
    meta = owned_metadata(names.configmap_name(name), name, namespace, uid)
    text = yaml.safe_dump(dict(config), sort_keys=False)
    data = {names.CONFIG_KEY: text}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def _mount(volume: str, path: str) -> Obj:
    return {"name": volume, "mountPath": path, "readOnly": True}


def sidecar_container(spec: ProxySpec, native: bool) -> Obj:
    side = spec.sidecar
    mounts: list[Obj] = [_mount(names.CONFIG_VOLUME, names.CONFIG_DIR)]
    if spec.auth.api_keys_secret_ref:
        mounts.append(_mount(names.API_KEYS_VOLUME, names.API_KEYS_DIR))
    if spec.auth.upstream_api_key_secret_ref:
        mounts.append(_mount(names.UPSTREAM_KEY_VOLUME, names.UPSTREAM_KEY_DIR))
    container: Obj = {
        "name": names.SIDECAR_NAME,
        "image": side.image,
        "imagePullPolicy": side.image_pull_policy,
        "command": ["embedding-proxy"],
        "args": ["serve", "--config", names.CONFIG_PATH],
        "ports": [
            {"name": "proxy-api", "containerPort": side.ports.api, "protocol": "TCP"},
            {"name": "proxy-metrics", "containerPort": side.ports.metrics, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": side.ports.api},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # /ready follows the upstream; no startupProbe, since a native sidecar's startup probe
        # would hold back TEI's own start, and TEI is what /ready waits for.
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": side.ports.api},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": json.loads(json.dumps(side.resources)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": names.SIDECAR_UID,
            "runAsGroup": names.SIDECAR_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
        # A native sidecar gets SIGTERM only after TEI has exited, but its preStop hook runs as
        # soon as the pod terminates, beside TEI's: it starts the drain (unready, keep-alive
        # closed, queued work finished) while TEI still answers. As a regular container the
        # proxy gets SIGTERM at that moment, which starts the same drain.
        container["lifecycle"] = {"preStop": {"exec": {"command": list(names.DRAIN_COMMAND)}}}
    return container


@dataclass(frozen=True)
class Termination:
    """What the pod's other containers need so that they outlive the proxy's drain."""

    pre_stop: Obj  # the preStop handler for each of them
    grace_seconds: int  # the least terminationGracePeriodSeconds of the pod


def termination(spec: ProxySpec, sleep_action: bool) -> Termination:
    """The `sleep` handler needs no binary in TEI's image, but exists only from Kubernetes 1.30
    (beta, on by default; alpha behind a gate in 1.29): older clusters run `sleep` in TEI's
    container instead, which TEI's own images (Debian and Ubuntu based) have."""
    seconds = spec.sidecar.drain_seconds + spec.sidecar.grace_seconds + PRE_STOP_MARGIN_SECONDS
    handler: Obj = (
        {"sleep": {"seconds": seconds}}
        if sleep_action
        else {"exec": {"command": ["sleep", str(seconds)]}}
    )
    return Termination(handler, seconds + EXIT_SECONDS)


def pre_stop_seconds(handler: Any) -> int | None:
    """How long a preStop handler of the form the operator writes sleeps; None for any other."""
    if not isinstance(handler, Mapping) or len(handler) != 1:
        return None
    sleep = handler.get("sleep")
    if isinstance(sleep, Mapping) and set(sleep) == {"seconds"}:
        seconds = sleep["seconds"]
        return seconds if isinstance(seconds, int) else None
    run = handler.get("exec")
    command = run.get("command") if isinstance(run, Mapping) else None
    if isinstance(command, list) and len(command) == 2 and command[0] == "sleep":
        return int(command[1]) if str(command[1]).isdigit() else None
    return None


def volumes(spec: ProxySpec, proxy_name: str) -> list[Obj]:
    # A whole-directory mount (never subPath), so that the kubelet's updates of the ConfigMap
    # reach the running proxy, which then reloads the batching settings.
    out: list[Obj] = [
        {"name": names.CONFIG_VOLUME, "configMap": {"name": names.configmap_name(proxy_name)}}
    ]
    keys = spec.auth.api_keys_secret_ref
    if keys:
        out.append(
            {
                "name": names.API_KEYS_VOLUME,
                "secret": {
                    "secretName": keys.name,
                    "items": [{"key": keys.key, "path": names.API_KEYS_FILE}],
                },
            }
        )
    upstream = spec.auth.upstream_api_key_secret_ref
    if upstream:
        out.append(
            {
                "name": names.UPSTREAM_KEY_VOLUME,
                "secret": {
                    "secretName": upstream.name,
                    "items": [{"key": upstream.key, "path": names.UPSTREAM_KEY_FILE}],
                },
            }
        )
    return out
