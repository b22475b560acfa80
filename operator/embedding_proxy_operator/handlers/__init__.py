"""kopf handlers, by workflow: read from the API, call the pure functions, write the results,
say what happened. Importing this package registers them all (`kopf run --module`).

- `lifecycle`: start-up settings, login, clean-up; `leading`: the Lease that makes one replica act.
- `reconcile`: the ConfigMap and the sidecar in the target Deployment; drift put back; delete.
- `drift`: the operator's ConfigMaps, changed or deleted by someone else, put back.
- `caches`: the Deployments and pods the daemon reads, from kopf's watches (indexes).
- `observe`: the daemon that reads the pods' proxies into status and autoscales (built-in or KEDA).
- `admission`: Webhook mode's admission webhook, its configuration and its probe.
- `state`: what is kept between calls, typed.
"""

from . import admission, caches, drift, lifecycle, observe, reconcile

__all__ = ["admission", "caches", "drift", "lifecycle", "observe", "reconcile"]
