"""The client for TEI: limits from /info, pooled calls, retries, isolation of a bad input."""
