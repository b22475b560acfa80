"""What the simulator counts: Prometheus metrics on its own registry, and plain stats for tests.

Metric names (all on `GET /metrics`):

- `tei_simulator_forward_passes_total`: forward passes run;
- `tei_simulator_batch_size`: inputs per forward pass (histogram);
- `tei_simulator_batch_tokens`: tokens per forward pass (histogram);
- `tei_simulator_forward_duration_seconds`: modelled time of each pass (histogram);
- `tei_simulator_inputs_total`: inputs computed;
- `tei_simulator_requests_total{route,status}`: requests answered;
- `tei_simulator_queue_size`: inputs waiting for a batch;
- `tei_simulator_inflight_inputs`: inputs holding one of the `max_concurrent_requests` permits;
- TEI's own `te_batch_next_size`, `te_batch_next_tokens` and `te_queue_size`, for dashboards made
  for TEI.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


@dataclass
class Stats:
    """Plain counts for `GET /simulator/stats` (resettable, unlike Prometheus counters)."""

    forward_passes: int = 0
    inputs_total: int = 0
    tokens_total: int = 0
    busy_seconds: float = 0.0
    batch_sizes: Tally[int] = field(default_factory=Tally)

    def record(self, inputs: int, tokens: int, seconds: float) -> None:
        self.forward_passes += 1
        self.inputs_total += inputs
        self.tokens_total += tokens
        self.busy_seconds += seconds
        self.batch_sizes[inputs] += 1

    def as_json(self) -> dict[str, object]:
        return {
            "forward_passes": self.forward_passes,
            "inputs_total": self.inputs_total,
            "tokens_total": self.tokens_total,
            "busy_seconds": round(self.busy_seconds, 6),
            "max_batch_size": max(self.batch_sizes, default=0),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


class SimulatorMetrics:
    def __init__(self, queue_size: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.forward_passes = Counter(
            "tei_simulator_forward_passes", "Forward passes run", registry=r
        )
        self.batch_size = Histogram(
            "tei_simulator_batch_size", "Inputs per forward pass", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "tei_simulator_batch_tokens",
            "Tokens per forward pass",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.forward_seconds = Histogram(
            "tei_simulator_forward_duration_seconds",
            "Modelled duration of each forward pass",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=r,
        )
        self.inputs = Counter("tei_simulator_inputs", "Inputs computed", registry=r)
        self.requests = Counter(
            "tei_simulator_requests", "Requests answered", ["route", "status"], registry=r
        )
        Gauge("tei_simulator_queue_size", "Inputs waiting for a batch", registry=r).set_function(
            queue_size
        )
        Gauge(
            "tei_simulator_inflight_inputs",
            "Inputs holding a max_concurrent_requests permit",
            registry=r,
        ).set_function(in_flight)
        # TEI's own names for the same figures.
        self.te_batch_next_size = Histogram(
            "te_batch_next_size", "Batch size", buckets=SIZE_BUCKETS, registry=r
        )
        self.te_batch_next_tokens = Histogram(
            "te_batch_next_tokens", "Batch tokens", buckets=TOKEN_BUCKETS, registry=r
        )
        Gauge("te_queue_size", "Queue size", registry=r).set_function(queue_size)
        self.stats = Stats()

    def record_forward(self, inputs: int, tokens: int, seconds: float) -> None:
        self.forward_passes.inc()
        self.batch_size.observe(inputs)
        self.batch_tokens.observe(tokens)
        self.forward_seconds.observe(seconds)
        self.inputs.inc(inputs)
        self.te_batch_next_size.observe(inputs)
        self.te_batch_next_tokens.observe(tokens)
        self.stats.record(inputs, tokens, seconds)
