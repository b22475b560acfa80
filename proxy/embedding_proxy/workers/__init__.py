"""Worker processes (`server.workers` > 1): the supervisor, a worker, their private control
sockets, the pod's metrics merged from theirs, and each worker's share of pod-level limits."""
