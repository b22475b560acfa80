"""HTTP/1.1 over httptools: the server the callers talk to and the client for upstream calls.

Knows nothing of TEI or batching: requests in, answers out, every peer byte bounded."""
