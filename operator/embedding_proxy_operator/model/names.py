"""Names the operator and the cluster share: the CRD's coordinates, and the names of what the
operator adds to a Deployment. They are an interface: change them only on purpose, since a new
name would leave the old sidecar behind in Deployments injected by an earlier version."""

from __future__ import annotations

GROUP = "embeddingproxy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EmbeddingProxy"
PLURAL = "embeddingproxies"
SINGULAR = "embeddingproxy"
SHORT_NAME = "eproxy"

# Who writes: field manager in managedFields, and the Events' reporting component.
FIELD_MANAGER = "embedding-proxy-operator"

# kopf's own bookkeeping, under our prefix rather than kopf's defaults.
FINALIZER = f"{GROUP}/finalizer"
PERSISTENCE_PREFIX = GROUP

# What the operator adds to the target's pod template; every name is its own, so that removal
# takes out exactly these and nothing of the user's.
SIDECAR_NAME = "embedding-proxy"
# The sidecar's image where an EmbeddingProxy names none and the operator's setting
# (EMBEDDING_PROXY_OPERATOR_SIDECAR_IMAGE; the chart's image.repository and tag) is not given.
DEFAULT_SIDECAR_IMAGE = "embedding-proxy:0.1.0"
CONFIG_VOLUME = "embedding-proxy-config"
API_KEYS_VOLUME = "embedding-proxy-api-keys"
UPSTREAM_KEY_VOLUME = "embedding-proxy-upstream-key"
OWNED_VOLUMES = (CONFIG_VOLUME, API_KEYS_VOLUME, UPSTREAM_KEY_VOLUME)

CONFIG_DIR = "/etc/embedding-proxy"
CONFIG_KEY = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
API_KEYS_DIR = "/etc/embedding-proxy-secrets/api-keys"
UPSTREAM_KEY_DIR = "/etc/embedding-proxy-secrets/upstream-key"
API_KEYS_FILE = "api-keys"
UPSTREAM_KEY_FILE = "api-key"

# On the Deployment: which EmbeddingProxy injected the sidecar (one per Deployment).
PROXY_ANNOTATION = f"{GROUP}/proxy"
# On the Deployment: what the operator changed of the user's own pod spec so that TEI outlives
# the proxy's drain (which containers got its preStop hook; the grace period it replaced), so
# that removing the sidecar gives back exactly what was there.
TERMINATION_ANNOTATION = f"{GROUP}/termination"
# The proxy's preStop hook: tells the proxy (PID 1 of its container) that the pod is terminating.
DRAIN_COMMAND = ["embedding-proxy", "drain"]
# On the pod template: a hash of the settings that only apply at start, so that changing them
# rolls the pods while batching changes (reloaded live) leave the template alone.
RESTART_HASH_ANNOTATION = f"{GROUP}/restart-hash"

# On the ConfigMap.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_PROXY = f"{GROUP}/proxy"
PART_OF = "embedding-proxy"

# The image the proxy runs as (the Dockerfile's user), for runAsUser.
SIDECAR_UID = 10001

# Condition types.
READY = "Ready"
TARGET_FOUND = "TargetFound"
SIDECAR_INJECTED = "SidecarInjected"
CONFIG_APPLIED = "ConfigApplied"
AUTOSCALING = "Autoscaling"
# True when rolling the target out needs a spare GPU (docs/operator.md, "GPUs and rollouts").
ROLLOUT_NEEDS_SPARE_GPU = "RolloutNeedsSpareGPU"
# True while the target's ReplicaSet cannot create pods (the Deployment's own ReplicaFailure).
REPLICA_FAILURE = "ReplicaFailure"


def configmap_name(proxy_name: str) -> str:
    """The ConfigMap holding the proxy's config for one EmbeddingProxy."""
    return f"{proxy_name}-embedding-proxy"


def scaled_object_name(proxy_name: str) -> str:
    """The KEDA ScaledObject the operator writes for one EmbeddingProxy (`provider: KEDA`); KEDA
    names the HPA it creates from it `keda-hpa-<this name>`."""
    return f"{proxy_name}-embedding-proxy"
