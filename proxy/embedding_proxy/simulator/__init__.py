"""A stand-in for Hugging Face text-embeddings-inference (TEI): its HTTP API, limits, errors and
internal batching, in front of a modelled GPU. Not a model: vectors are deterministic per input
and mean nothing. See docs/simulator.md."""

from .app import create_app, run, serve
from .settings import SimulatorSettings, add_arguments, settings_from_args

__all__ = [
    "SimulatorSettings",
    "add_arguments",
    "create_app",
    "run",
    "serve",
    "settings_from_args",
]
