"""Talking to the world: the API server (reads and writes), the proxies' metrics ports, the Lease,
the webhook's HTTPS server, and the operator's own metrics."""
