"""Talking to the world: the API server (reads and writes), the proxies' metrics ports, peering,
the webhook's HTTPS server, and the operator's own metrics."""
