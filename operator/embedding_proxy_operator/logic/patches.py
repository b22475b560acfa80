"""Pure: reading a Deployment, and the JSON Patch that puts what `render` made into it (or out).

JSON Patch rather than a strategic merge or server-side apply: each operation names exactly one
element of the user's lists (by index, checked against the object read), so the user's containers
and volumes are never replaced, and a `test` of the resourceVersion makes the patch fail instead of
overwriting a change made since the read."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import names, quantity
from . import pods
from .render import DEFAULT_GRACE_SECONDS, Termination, pre_stop_seconds

Obj = dict[str, Any]
Op = dict[str, Any]


# ---- reading a Deployment ----------------------------------------------------------------


def pod_spec(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return deployment.get("spec", {}).get("template", {}).get("spec", {}) or {}


def find_sidecar(deployment: Mapping[str, Any]) -> tuple[str, Obj] | None:
    """Where the sidecar is now (`containers` or `initContainers`) and its spec, if anywhere."""
    pod = pod_spec(deployment)
    for field in ("initContainers", "containers"):
        for c in pod.get(field) or []:
            if c.get("name") == names.SIDECAR_NAME:
                return field, c
    return None


def owner_of(deployment: Mapping[str, Any]) -> str | None:
    return (deployment.get("metadata", {}).get("annotations") or {}).get(names.PROXY_ANNOTATION)


def user_ports(deployment: Mapping[str, Any]) -> dict[int, str]:
    """Ports of the pod's other long-running containers: port → container name."""
    pod = pod_spec(deployment)
    out: dict[int, str] = {}
    running = list(pod.get("containers") or []) + [
        c for c in pod.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    ]
    for c in running:
        if c.get("name") == names.SIDECAR_NAME:
            continue
        for p in c.get("ports") or []:
            if isinstance(p.get("containerPort"), int):
                out[p["containerPort"]] = c.get("name", "?")
    return out


def user_containers(deployment: Mapping[str, Any]) -> list[Obj]:
    containers = pod_spec(deployment).get("containers") or []
    return [c for c in containers if c.get("name") != names.SIDECAR_NAME]


# ---- JSON Patch ---------------------------------------------------------------------------


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


logger = logging.getLogger(__name__)
# The malformed termination annotation last logged, per Deployment: logged once, not per event.
_MISREAD: dict[str, str] = {}
_MISREAD_MAX = 1024

POD = "/spec/template/spec"
TEMPLATE_META = "/spec/template/metadata"


def covers(stored: Any, wanted: Any) -> bool:
    """Whether `stored` holds everything in `wanted`: the API server adds defaults to containers
    and volumes (terminationMessagePath, defaultMode, ...), which are no reason to patch."""
    if isinstance(wanted, Mapping):
        return isinstance(stored, Mapping) and all(
            k in stored and (_same_amounts if k == "resources" else covers)(stored[k], v)
            for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(wanted)
            and all(covers(s, w) for s, w in zip(stored, wanted, strict=True))
        )
    return bool(stored == wanted)


def _same_amounts(stored: Any, wanted: Any) -> bool:
    """`covers` for a container's resources, with quantities compared by value: the API server
    stores "0.5" as "500m" and "1024Mi" as "1Gi", which is no reason to patch."""
    if not isinstance(wanted, Mapping) or not all(isinstance(v, Mapping) for v in wanted.values()):
        return covers(stored, wanted)
    if not isinstance(stored, Mapping):
        return False
    for kind, amounts in wanted.items():
        kept = stored.get(kind) or {}
        if not isinstance(kept, Mapping):
            return False
        for name, amount in amounts.items():
            if name not in kept or not _same_amount(kept[name], amount):
                return False
    return True


def _same_amount(stored: Any, wanted: Any) -> bool:
    value = quantity.parse(wanted)
    return (value is not None and quantity.parse(stored) == value) or stored == wanted


class _ListPatcher:
    """Emits operations on one list while tracking its state, so indices stay right."""

    def __init__(self, ops: list[Op], path: str, items: Sequence[Obj] | None) -> None:
        self.ops, self.path = ops, path
        self.exists = items is not None
        self.items = list(items or [])

    def index(self, name: str) -> int | None:
        for i, item in enumerate(self.items):
            if item.get("name") == name:
                return i
        return None

    def remove(self, name: str) -> None:
        # Every duplicate, highest index first.
        while (i := self.index(name)) is not None:
            self.ops.append({"op": "remove", "path": f"{self.path}/{i}"})
            del self.items[i]

    def put(self, item: Obj) -> None:
        i = self.index(item["name"])
        if i is not None:
            if not covers(self.items[i], item):
                self.ops.append({"op": "replace", "path": f"{self.path}/{i}", "value": item})
                self.items[i] = item
        elif not self.exists:
            self.ops.append({"op": "add", "path": self.path, "value": [item]})
            self.items, self.exists = [item], True
        else:
            self.ops.append({"op": "add", "path": f"{self.path}/-", "value": item})
            self.items.append(item)

    def drop_if_empty(self) -> None:
        # Leave no empty list behind where the user had none.
        if self.exists and not self.items:
            self.ops.append({"op": "remove", "path": self.path})
            self.exists = False


def termination_record(deployment: Mapping[str, Any]) -> Obj:
    """What the operator changed of the user's pod spec, from the Deployment's annotation: {}
    when there is none, or what is there is not of the shape the operator writes (logged once)."""
    meta = deployment.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(names.TERMINATION_ANNOTATION)
    if not text:
        return {}
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past Python's limit
        record = None
    if _well_formed(record):
        return record
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    if _MISREAD.get(where) != text:
        if len(_MISREAD) >= _MISREAD_MAX:
            _MISREAD.clear()
        _MISREAD[where] = text
        logger.warning(
            "Deployment %s: annotation %s is not the operator's record, taken as absent: %.200r",
            where,
            names.TERMINATION_ANNOTATION,
            text,
        )
    return {}


def _well_formed(record: Any) -> bool:
    """{"preStop": [container names], "grace": {"was": seconds or null, "set": seconds}}, each
    part optional, as `_termination_ops` writes it."""
    if not isinstance(record, dict) or not set(record) <= {"preStop", "grace"}:
        return False
    hooked, grace = record.get("preStop", []), record.get("grace")
    return (
        isinstance(hooked, list)
        and all(isinstance(n, str) for n in hooked)
        and (
            grace is None
            or (
                isinstance(grace, dict)
                and set(grace) == {"was", "set"}
                and _seconds(grace["set"])
                and (grace["was"] is None or _seconds(grace["was"]))
            )
        )
    )


def _seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _termination_ops(
    deployment: Mapping[str, Any], wanted: Termination | None
) -> tuple[list[Op], str | None]:
    """Operations on the user's containers' preStop hooks and the pod's grace period: put in
    (`wanted`) or take out (None) the operator's own, and never touch a hook of the user's or
    shorten their grace period. Also the annotation that records what is the operator's.

    Only replaces values in place, so the indices of the container list stay valid for the
    operations that follow."""
    pod = pod_spec(deployment)
    record = termination_record(deployment)
    ours = set(record.get("preStop") or [])
    ops: list[Op] = []
    hooked: list[str] = []
    for i, c in enumerate(pod.get("containers") or []):
        name = c.get("name")
        if name == names.SIDECAR_NAME:
            continue
        lifecycle = c.get("lifecycle")
        handler = (lifecycle or {}).get("preStop")
        mine = name in ours and pre_stop_seconds(handler) is not None
        if handler is not None and not mine:
            continue  # the user's own hook: theirs to keep
        path = f"{POD}/containers/{i}/lifecycle"
        if wanted is None:
            if mine and set(lifecycle) == {"preStop"}:
                ops.append({"op": "remove", "path": path})
            elif mine:
                ops.append({"op": "remove", "path": f"{path}/preStop"})
            continue
        hooked.append(name)
        if handler == wanted.pre_stop:
            continue
        if lifecycle is None:
            ops.append({"op": "add", "path": path, "value": {"preStop": wanted.pre_stop}})
        else:
            ops.append({"op": "add", "path": f"{path}/preStop", "value": wanted.pre_stop})

    current = pod.get("terminationGracePeriodSeconds")
    grace = record.get("grace")
    # The value before the operator raised it, unless the user has changed it since.
    mine_grace = isinstance(grace, dict) and "set" in grace and current == grace["set"]
    base = grace.get("was") if mine_grace else current
    base_seconds = base if isinstance(base, int) else DEFAULT_GRACE_SECONDS
    target, raised = base, None
    if wanted is not None and wanted.grace_seconds > base_seconds:
        target = wanted.grace_seconds
        raised = {"was": base, "set": target}
    grace_path = f"{POD}/terminationGracePeriodSeconds"
    if target != current:
        if target is None:
            ops.append({"op": "remove", "path": grace_path})
        else:
            ops.append({"op": "add", "path": grace_path, "value": target})

    new_record: Obj = {}
    if hooked:
        new_record["preStop"] = sorted(hooked)
    if raised:
        new_record["grace"] = raised
    text = json.dumps(new_record, sort_keys=True, separators=(",", ":")) if new_record else None
    return ops, text


def _guard(deployment: Mapping[str, Any]) -> list[Op]:
    rv = deployment.get("metadata", {}).get("resourceVersion")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}] if rv else []


def _annotation_ops(
    obj: Mapping[str, Any], base: str, changes: Mapping[str, str | None]
) -> list[Op]:
    """Set (or, with None, remove) annotations at `base` (a path to a metadata object)."""
    parts = [p for p in base.split("/") if p]
    meta: Any = obj
    for p in parts:
        meta = meta.get(p) if isinstance(meta, Mapping) else None
    annotations = (meta or {}).get("annotations")
    current = dict(annotations or {})
    wanted = dict(current)
    for key, value in changes.items():
        if value is None:
            wanted.pop(key, None)
        else:
            wanted[key] = value
    if wanted == current:
        return []
    if not wanted:
        return [{"op": "remove", "path": f"{base}/annotations"}]
    if meta is None:
        return [{"op": "add", "path": base, "value": {"annotations": wanted}}]
    if annotations is None:
        return [{"op": "add", "path": f"{base}/annotations", "value": wanted}]
    ops: list[Op] = []
    for key in changes:
        path = f"{base}/annotations/{_escape(key)}"
        if key in wanted and current.get(key) != wanted[key]:
            ops.append({"op": "add", "path": path, "value": wanted[key]})
        elif key not in wanted and key in current:
            ops.append({"op": "remove", "path": path})
    return ops


def inject_ops(
    deployment: Mapping[str, Any],
    proxy_name: str,
    container: Obj,
    wanted_volumes: Sequence[Obj],
    restart: str,
    termination: Termination,
) -> list[Op]:
    """Operations that make the Deployment carry exactly this sidecar, and the rest of the pod
    outlive it (`termination`); [] when it already does."""
    pod = pod_spec(deployment)
    ops, record = _termination_ops(deployment, termination)
    native = container.get("restartPolicy") == "Always"
    home, other = ("initContainers", "containers") if native else ("containers", "initContainers")
    away = _ListPatcher(ops, f"{POD}/{other}", pod.get(other))
    away.remove(names.SIDECAR_NAME)
    if other == "initContainers":
        away.drop_if_empty()
    _ListPatcher(ops, f"{POD}/{home}", pod.get(home)).put(container)

    vols = _ListPatcher(ops, f"{POD}/volumes", pod.get("volumes"))
    wanted = {v["name"] for v in wanted_volumes}
    for name in names.OWNED_VOLUMES:
        if name not in wanted:
            vols.remove(name)
    for v in wanted_volumes:
        vols.put(v)

    ops += _annotation_ops(deployment, TEMPLATE_META, {names.RESTART_HASH_ANNOTATION: restart})
    ops += _annotation_ops(
        deployment,
        "/metadata",
        {names.PROXY_ANNOTATION: proxy_name, names.TERMINATION_ANNOTATION: record},
    )
    return _guard(deployment) + ops if ops else []


def remove_ops(deployment: Mapping[str, Any], restart: str | None = None) -> list[Op]:
    """Operations that take out everything the operator added; [] when nothing is there. With
    `restart` (Webhook mode, where the webhook injects the pods), the template's restart
    annotation is set to it instead of taken out."""
    pod = pod_spec(deployment)
    ops, _ = _termination_ops(deployment, None)
    present = find_sidecar(deployment)  # a user's own container of that name stays
    if present and (owner_of(deployment) or pods.looks_ours(present[1])):
        inits = _ListPatcher(ops, f"{POD}/initContainers", pod.get("initContainers"))
        inits.remove(names.SIDECAR_NAME)
        inits.drop_if_empty()
        _ListPatcher(ops, f"{POD}/containers", pod.get("containers")).remove(names.SIDECAR_NAME)
    vols = _ListPatcher(ops, f"{POD}/volumes", pod.get("volumes"))
    for name in names.OWNED_VOLUMES:
        vols.remove(name)
    vols.drop_if_empty()
    ops += _annotation_ops(deployment, TEMPLATE_META, {names.RESTART_HASH_ANNOTATION: restart})
    ops += _annotation_ops(
        deployment,
        "/metadata",
        {names.PROXY_ANNOTATION: None, names.TERMINATION_ANNOTATION: None},
    )
    return _guard(deployment) + ops if ops else []


def restart_annotation(deployment: Mapping[str, Any]) -> str | None:
    meta = deployment.get("spec", {}).get("template", {}).get("metadata") or {}
    return (meta.get("annotations") or {}).get(names.RESTART_HASH_ANNOTATION)


# What `kubectl rollout restart` sets on the pod template.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restart_ops(deployment: Mapping[str, Any], stamp: str) -> list[Op]:
    """Operations that roll the Deployment's pods, as `kubectl rollout restart` does."""
    ops = _annotation_ops(deployment, TEMPLATE_META, {RESTARTED_AT: stamp})
    return _guard(deployment) + ops if ops else []
