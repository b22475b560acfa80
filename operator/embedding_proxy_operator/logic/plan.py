"""Pure decisions: from an EmbeddingProxy and its target Deployment (as read), what to write and
what to say. The handlers read, call `plan`, write, and report what `plan` says."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import names
from ..model.settings import image_allowed
from ..model.spec import ProxySpec, SpecError, parse
from . import patches, pods, render, replica_failure, rollout
from .conditions import Fact

Obj = dict[str, Any]
# The longest EmbeddingProxy name: it is a label value on what the operator writes.
MAX_NAME = 63


@dataclass(frozen=True)
class Notice:
    reason: str
    message: str


@dataclass
class Plan:
    spec: ProxySpec | None = None
    config: Obj | None = None
    configmap: Obj | None = None
    ops: list[render.Op] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    mode: str | None = None
    # How the sidecar gets into the pods ("Deployment" or "Webhook"), and in Webhook mode the
    # hash of what the webhook injects (status.injection.hash).
    injection: str = "Deployment"
    injection_hash: str | None = None
    # What the webhook adds to a pod: the sidecar, its volumes, the termination settings.
    container: Obj | None = None
    volumes: list[Obj] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        return self.config["version"] if self.config else None

    @property
    def acts(self) -> bool:
        """Whether the operator acts on the target: a plan that refuses it (an image not allowed,
        a target claimed by another EmbeddingProxy, a conflict) leaves it, and its scale, alone."""
        return self.mode is not None


def plan(
    proxy: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    native_supported: bool,
    sleep_action: bool = True,
    allowed_images: tuple[str, ...] = (),
    default_injection: str = "Deployment",
    previous_hash: str | None = None,
    webhook: bool = True,
) -> Plan:
    """`sleep_action`: whether the cluster knows the preStop `sleep` handler (1.30 and later);
    `allowed_images`: the operator's allow list of sidecar images (empty: any);
    `default_injection`: the mode of an EmbeddingProxy without `spec.injection`;
    `previous_hash`: Webhook mode, the injection the pods were given so far (from status);
    `webhook`: whether this operator runs the admission webhook (not in namespaced mode)."""
    out = _plan(
        proxy,
        deployment,
        native_supported,
        sleep_action,
        allowed_images,
        default_injection,
        previous_hash,
        webhook,
    )
    if out.spec is not None:
        # Whatever was planned, pods the API server refuses to create run no sidecar.
        out.facts = replica_failure.applied(out.facts, deployment, out.spec.target_ref.name)
        if out.facts[0].status == "True":
            out.warnings.append(Notice(names.REPLICA_FAILURE, out.facts[0].message))
    return out


def _plan(
    proxy: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    native_supported: bool,
    sleep_action: bool,
    allowed_images: tuple[str, ...],
    default_injection: str,
    previous_hash: str | None,
    webhook: bool,
) -> Plan:
    meta = proxy.get("metadata", {})
    name, namespace = meta["name"], meta["namespace"]
    out = Plan()
    try:
        if len(name) > MAX_NAME:
            # Stored before the CRD refused such names: the label `names.LABEL_PROXY` would be
            # refused on every write.
            raise SpecError(f"metadata.name must be at most {MAX_NAME} characters")
        spec = parse(proxy.get("spec") or {})
    except SpecError as e:
        msg = f"the spec is invalid: {e}"
        out.facts = [
            Fact(names.SIDECAR_INJECTED, "False", "InvalidSpec", msg),
            Fact(names.CONFIG_APPLIED, "False", "InvalidSpec", msg),
        ]
        out.warnings.append(Notice("InvalidSpec", msg))
        return out

    out.spec = spec
    out.injection = spec.injection or default_injection
    if not image_allowed(spec.sidecar.image, allowed_images):
        # Nothing is written: the image would run under the target's ServiceAccount.
        msg = (
            f"sidecar image {spec.sidecar.image!r} is not allowed by the operator "
            f"(allowed: {', '.join(allowed_images)}); nothing was written"
        )
        where = _target_fact(deployment, spec.target_ref.name, namespace)
        return _refused(out, where, "ImageNotAllowed", msg)
    if out.injection == "Webhook" and not webhook:
        # A namespaced operator may not hold a cluster-wide webhook (docs/security.md).
        msg = (
            "injection Webhook needs the operator's admission webhook, which this operator does "
            "not run (it needs cluster mode); set spec.injection to Deployment. Nothing was written"
        )
        where = _target_fact(deployment, spec.target_ref.name, namespace)
        return _refused(out, where, "WebhookUnavailable", msg)
    out.config = render.proxy_config(spec)
    out.configmap = render.configmap(name, namespace, meta.get("uid"), out.config)
    target = spec.target_ref.name

    if deployment is None or deployment.get("metadata", {}).get("deletionTimestamp"):
        msg = (
            f"Deployment {target!r} does not exist in namespace {namespace!r}; "
            "the sidecar is added as soon as it appears"
        )
        out.facts = [
            Fact(names.TARGET_FOUND, "False", "TargetNotFound", msg),
            Fact(names.SIDECAR_INJECTED, "False", "TargetNotFound", msg),
        ]
        return out

    found = Fact(names.TARGET_FOUND, "True", "Found", f"Deployment {target!r} found")
    refusal = _refusal(deployment, spec, name)
    if refusal:
        out.facts = [found, refusal]
        out.warnings.append(Notice(refusal.reason, refusal.message))
        return out

    native = spec.sidecar.mode == "Native" and native_supported
    out.mode = "Native" if native else "Container"
    if spec.sidecar.mode == "Native" and not native_supported:
        out.warnings.append(
            Notice(
                "NativeSidecarUnsupported",
                "this cluster predates native sidecars (Kubernetes 1.29); "
                "the proxy runs as a regular container instead",
            )
        )
    container = render.sidecar_container(spec, native)
    volumes = render.volumes(spec, name)
    term = render.termination(spec, sleep_action)
    out.container, out.volumes = container, volumes
    where = "a native sidecar" if native else "a container"
    if out.injection == "Webhook":
        out.injection_hash = render.injection_hash(container, volumes, term, out.config)
        out.ops = patches.remove_ops(
            deployment, _webhook_restart(deployment, out.injection_hash, previous_hash)
        )
        message = (
            f"the admission webhook adds {spec.sidecar.image} as {where} to each new pod of "
            f"Deployment {target!r}"
        )
        out.facts = [found, Fact(names.SIDECAR_INJECTED, "True", "Webhook", message)]
    else:
        out.ops = patches.inject_ops(
            deployment, name, container, volumes, render.restart_hash(out.config), term
        )
        message = f"{spec.sidecar.image} runs as {where} in Deployment {target!r}"
        out.facts = [found, Fact(names.SIDECAR_INJECTED, "True", "Injected", message)]
    # Rolling the pods (injection in Deployment mode; in both modes, every change that needs a
    # restart) may need a GPU that is not there. (SidecarInjected stays the last fact.)
    surge = rollout.surge_fact(deployment, target)
    out.facts.insert(0, surge)
    if surge.status == "True":
        out.warnings.append(Notice(names.ROLLOUT_NEEDS_SPARE_GPU, surge.message))
    out.warnings += _advice(deployment, spec)
    if native and patches.pod_spec(deployment).get("shareProcessNamespace"):
        out.warnings.append(
            Notice(
                "SharedProcessNamespace",
                "the pod shares one process namespace, so the proxy is not PID 1 of its "
                "container and its preStop hook cannot start the drain: it starts only once TEI "
                "has exited; set spec.sidecar.mode to Container for this Deployment",
            )
        )
    return out


def _webhook_restart(
    deployment: Mapping[str, Any], wanted: str, previous: str | None
) -> str | None:
    """The template's restart annotation in Webhook mode: set (which rolls the pods) only when
    what the webhook injects has changed since the pods were made, or when the template carries
    the annotation or the sidecar already (a switch from Deployment mode); otherwise the
    template is left alone, and the pods the webhook injected keep running."""
    if (previous and previous != wanted) or patches.restart_annotation(deployment) is not None:
        return wanted
    if patches.find_sidecar(deployment) is not None or patches.owner_of(deployment):
        return wanted
    return None


def _target_fact(deployment: Mapping[str, Any] | None, target: str, namespace: str) -> Fact:
    if deployment is None or deployment.get("metadata", {}).get("deletionTimestamp"):
        msg = f"Deployment {target!r} does not exist in namespace {namespace!r}"
        return Fact(names.TARGET_FOUND, "False", "TargetNotFound", msg)
    return Fact(names.TARGET_FOUND, "True", "Found", f"Deployment {target!r} found")


def _refused(out: Plan, where: Fact, reason: str, msg: str) -> Plan:
    """`out` for a spec the operator will not apply: nothing written, the reason in status and
    in one warning."""
    out.facts = [
        where,
        Fact(names.SIDECAR_INJECTED, "False", reason, msg),
        Fact(names.CONFIG_APPLIED, "False", reason, msg),
    ]
    out.warnings.append(Notice(reason, msg))
    return out


def _refusal(deployment: Mapping[str, Any], spec: ProxySpec, name: str) -> Fact | None:
    """Why the sidecar must not go into this Deployment, if there is a reason."""
    target = spec.target_ref.name
    owner = patches.owner_of(deployment)
    if owner and owner != name:
        return Fact(
            names.SIDECAR_INJECTED,
            "False",
            "TargetClaimed",
            f"Deployment {target!r} already carries the sidecar of EmbeddingProxy {owner!r}; "
            "one EmbeddingProxy per Deployment",
        )
    if not patches.user_containers(deployment):
        return Fact(
            names.SIDECAR_INJECTED,
            "False",
            "TargetHasNoContainers",
            f"Deployment {target!r} has no containers of its own to put the proxy beside",
        )
    present = patches.find_sidecar(deployment)
    if present and not owner and not pods.looks_ours(present[1]):
        return Fact(
            names.SIDECAR_INJECTED,
            "False",
            "NameConflict",
            f"Deployment {target!r} has its own container named {names.SIDECAR_NAME!r}; "
            "rename it so the operator can add the proxy",
        )
    taken = patches.user_ports(deployment)
    ports = spec.sidecar.ports
    for port, role, field_ in (
        (ports.api, "API", "api"),
        (ports.metrics, "metrics", "metrics"),
    ):
        if port in taken:
            return Fact(
                names.SIDECAR_INJECTED,
                "False",
                "PortConflict",
                f"the proxy's {role} port {port} is already used by container "
                f"{taken[port]!r}; set spec.sidecar.ports.{field_} to a free port",
            )
    return None


def release_marked(deployment: Mapping[str, Any], proxy_name: str) -> bool:
    """Whether this EmbeddingProxy's injection left its mark on the Deployment: its annotation
    (Deployment mode), the template's restart annotation (Webhook mode), or a sidecar it
    rendered. Without a mark there is nothing of the operator's to take out."""
    owner = patches.owner_of(deployment)
    if owner is not None:
        return owner == proxy_name
    present = patches.find_sidecar(deployment)
    return patches.restart_annotation(deployment) is not None or bool(
        present and pods.looks_ours(present[1])
    )


def _advice(deployment: Mapping[str, Any], spec: ProxySpec) -> list[Notice]:
    out: list[Notice] = []
    # The operator gives every other container a preStop sleep and raises the grace period as
    # needed; a hook of the user's own is kept, and may end before the proxy has drained.
    need = render.termination(spec, True)
    seconds = need.pre_stop["sleep"]["seconds"]
    ours = set(patches.termination_record(deployment).get("preStop") or [])
    for c in patches.user_containers(deployment):
        if c.get("name") in ours:
            continue
        handler = (c.get("lifecycle") or {}).get("preStop")
        if handler is None or (render.pre_stop_seconds(handler) or 0) >= seconds:
            continue
        out.append(
            Notice(
                "PreStopKept",
                f"container {c.get('name')!r} has its own preStop hook, which the operator "
                f"keeps; unless it lasts {seconds} s (the proxy's drainSeconds + graceSeconds "
                f"+ {render.PRE_STOP_MARGIN_SECONDS}), the container may stop before the "
                "proxy has drained and requests still arriving get errors",
            )
        )
    taken = patches.user_ports(deployment)
    up = spec.upstream
    if up.is_local and taken and up.port not in taken:
        listed = ", ".join(str(p) for p in sorted(taken))
        out.append(
            Notice(
                "UpstreamPortUnknown",
                f"upstream.url uses port {up.port}, but the pod's containers declare {listed}; "
                "TEI's image listens on 80, its binary on 3000 by default",
            )
        )
    return out


# Pods named in a ConfigApplied message, at most.
NAMED_PODS = 5


def config_fact(
    ready_pods: int, current_pods: int, version: str | None, behind: Sequence[str] = ()
) -> Fact:
    """ConfigApplied from what the ready pods' proxies report; `behind` says which pods are not
    on `version` and why (`lagging`), to be named."""
    if version is None:
        return Fact(names.CONFIG_APPLIED, "False", "NoConfig", "no config has been written")
    if ready_pods == 0:
        return Fact(
            names.CONFIG_APPLIED,
            "Unknown",
            "NoReadyPods",
            f"config {version} is written; no ready pod runs the sidecar yet",
        )
    if current_pods < ready_pods:
        return Fact(
            names.CONFIG_APPLIED,
            "False",
            "Rolling",
            f"{current_pods} of {ready_pods} ready pods run config {version}" + _named(behind),
        )
    return Fact(
        names.CONFIG_APPLIED,
        "True",
        "Applied",
        f"all {ready_pods} ready pods run config {version}",
    )


def lagging(
    name: str, served: str | None, failed_reloads: float | None, failed_since: float = 0
) -> str:
    """One pod not on the current config, as ConfigApplied names it: `failed_since`, reloads
    that failed since it loaded the version it serves (the file it has is not what it runs)."""
    what = f"serves {served}" if served else "did not say"
    if failed_since:
        what += f", but failed to load its config file since ({failed_since:g} failed reloads)"
    elif failed_reloads:
        what += f", {failed_reloads:g} failed reloads"
    return f"{name} ({what})"


def _named(behind: Sequence[str]) -> str:
    if not behind:
        return ""
    more = len(behind) - NAMED_PODS
    tail = f" and {more} more" if more > 0 else ""
    return "; not yet: " + ", ".join(behind[:NAMED_PODS]) + tail
