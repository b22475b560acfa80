"""The engine behind the simulator's API: the cost model (a sleep per pass) or a real encoder."""

from __future__ import annotations

from .gpu import CostModel, Engine, OnForward
from .settings import SimulatorSettings
from .torch_backend import load_engine


def build_engine(settings: SimulatorSettings, on_forward: OnForward | None = None) -> Engine:
    """The engine `settings.backend` names; with `torch`, the model is built and warmed up here,
    before the simulator listens."""
    s = settings
    batching = {
        "max_batch_tokens": s.max_batch_tokens,
        "max_batch_requests": s.max_batch_requests,
        "internal_batching": s.internal_batching,
        "replicas": s.backend_replicas,
        "on_forward": on_forward,
    }
    cost = CostModel(s.base_ms, s.knee_tokens, s.per_token_us)
    if s.backend == "torch":
        return load_engine(s.model, s.device, s.torch_threads, cost=cost, **batching)
    return Engine(cost=cost, **batching)
