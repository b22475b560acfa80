"""embedding-proxy: a batching sidecar for text-embeddings-inference."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embedding-proxy")
except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
    __version__ = "0+unknown"
