"""Every knob of the simulator, and its command line (`embedding-proxy simulate-tei`).

Flag names follow TEI's launcher (router/src/main.rs) where TEI has the setting
(`--max-client-batch-size`, `--max-batch-tokens`, `--max-concurrent-requests`, `--auto-truncate`,
`--payload-limit`, `--served-model-name`, `--cors-allow-origin`, `--default-prompt`, ...), with
TEI's defaults for the version simulated (`--tei-version`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from .torch_backend import DEVICES, MODELS

BACKENDS = ("cost-model", "torch")
DEFAULT_MODEL_ID = "embedding-proxy/tei-simulator"
DEFAULT_PROMPTS = {"query": "query: ", "passage": "passage: "}
# The release each version answers as (`/info`'s `version`); 1.9 is the current one.
TEI_VERSIONS = {"1.9": "1.9.3", "1.9.3": "1.9.3", "1.8": "1.8.3", "1.8.3": "1.8.3"}
MODEL_TYPES = ("embedding", "classifier", "reranker", "splade")


@dataclass
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    model_id: str = DEFAULT_MODEL_ID
    dimensions: int = 768
    max_client_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_concurrent_requests: int = 512
    max_input_length: int = 512
    # None: TEI's default for the version (on since 1.9, off before).
    auto_truncate: bool | None = None
    payload_limit: int = 2_000_000
    api_key: str | None = None
    prompts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    default_prompt: str | None = None
    default_prompt_name: str | None = None
    tei_version: str = "1.9.3"
    model_type: str = "embedding"
    served_model_name: str | None = None  # None: the model id, as TEI defaults it
    cors_allow_origin: list[str] | None = None  # None or "*" among them: any origin
    # TEI's own batching inside; off models a server that runs one request at a time.
    internal_batching: bool = True
    # The cost of one forward pass (see gpu.CostModel).
    base_ms: float = 6.0
    knee_tokens: int = 8192
    per_token_us: float = 0.4
    backend_replicas: int = 1
    vector_cache_size: int = 4096
    # `torch`: a real encoder of `model`'s dimensions runs each pass (see torch_backend.py).
    backend: str = "cost-model"
    model: str = "bert-base"
    device: str = "auto"
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.tei_version not in TEI_VERSIONS:
            raise ValueError(
                f"tei_version must be one of {', '.join(TEI_VERSIONS)}, got {self.tei_version!r}"
            )
        self.tei_version = TEI_VERSIONS[self.tei_version]
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}"
            )
        if self.auto_truncate is None:
            self.auto_truncate = not self.before_1_9
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "torch":
            self._take_model()
        positive = (
            "dimensions",
            "max_client_batch_size",
            "max_batch_tokens",
            "max_concurrent_requests",
            "max_input_length",
            "payload_limit",
            "backend_replicas",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_batch_requests is not None and self.max_batch_requests < 1:
            raise ValueError(
                f"max_batch_requests must be at least 1, got {self.max_batch_requests}"
            )
        self._clamp_input_length()
        self._take_default_prompt()
        if self.served_model_name is None:
            self.served_model_name = self.model_id
        for name in ("base_ms", "per_token_us", "knee_tokens", "vector_cache_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def before_1_9(self) -> bool:
        """TEI 1.8 behaviour: 413 for validation errors, batches wait for permits."""
        return self.tei_version.startswith("1.8.")

    @property
    def model_pooling(self) -> str | None:
        return "splade" if self.model_type == "splade" else None

    def _clamp_input_length(self) -> None:
        """TEI's rule (router/src/lib.rs): an input longer than a batch could never be scheduled,
        so with auto-truncate the longest input is cut to `max_batch_tokens`, and without it TEI
        refuses to start."""
        if self.max_input_length <= self.max_batch_tokens:
            return
        if self.auto_truncate:
            self.max_input_length = self.max_batch_tokens
            return
        raise ValueError(
            f"The maximum input length is `{self.max_input_length}` which exceeds "
            f"`--max-batch-tokens={self.max_batch_tokens}`. Either increase `--max-batch-tokens` "
            f"to at least `{self.max_input_length}`, or set `--auto-truncate true` so that "
            "regardless the maximum input length, those are truncated to "
            f"`{self.max_batch_tokens}` tokens."
        )

    def _take_default_prompt(self) -> None:
        """`--default-prompt-name` picks one of the prompts at start, as TEI's launcher does."""
        name = self.default_prompt_name
        if name is None:
            return
        if self.default_prompt is not None:
            raise ValueError("--default-prompt and --default-prompt-name cannot be used together")
        if not self.prompts:
            raise ValueError(
                f"`default-prompt-name` is set to `{name}` but no prompts were found in the "
                "Sentence Transformers configuration"
            )
        if name not in self.prompts:
            available = ", ".join(f'"{k}"' for k in sorted(self.prompts))  # Rust's `{:?}`
            raise ValueError(
                f"`default-prompt-name` is set to `{name}` but it was not found in the Sentence "
                f"Transformers prompts. Available prompts: [{available}]"
            )
        self.default_prompt = self.prompts[name]

    def _take_model(self) -> None:
        """The model decides the vector size and the longest input; /info names it."""
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {self.torch_threads}")
        spec = MODELS[self.model]
        self.dimensions = spec.hidden
        self.max_input_length = min(self.max_input_length, spec.max_positions)
        if self.model_id == DEFAULT_MODEL_ID:
            self.model_id = f"embedding-proxy/random-{self.model}"


def _prompt(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=TEXT, got {value!r}")
    return name, text


def _bool(value: str) -> bool:
    """A boolean as TEI's launcher (clap) reads one."""
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return value == "true"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags to `parser`."""
    d = SimulatorSettings()
    server = parser.add_argument_group("server")
    server.add_argument("--host", "--hostname", default=d.host, help=f"default {d.host}")
    server.add_argument("-p", "--port", type=int, default=d.port, help=f"default {d.port}")
    server.add_argument(
        "--payload-limit", type=int, default=d.payload_limit, help="request body limit, bytes"
    )
    server.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY`")
    server.add_argument(
        "--cors-allow-origin",
        action="append",
        metavar="ORIGIN",
        help="origins a browser may call from (repeatable; default: any)",
    )

    tei = parser.add_argument_group("TEI (reported by /info)")
    tei.add_argument(
        "--tei-version",
        choices=list(TEI_VERSIONS),
        default=d.tei_version,
        help="the TEI release to behave as (default %(default)s; 1.8: 413 for validation "
        "errors, batches wait for permits, auto-truncate off)",
    )
    tei.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        default=d.model_type,
        help="the model served, and so the routes that answer (default %(default)s)",
    )
    tei.add_argument("--model-id", default=d.model_id)
    tei.add_argument("--served-model-name", help="the OpenAI `model` (default: the model id)")
    tei.add_argument(
        "--dimensions", type=int, help=f"vector size (default {d.dimensions}; torch: the model's)"
    )
    tei.add_argument("--max-client-batch-size", type=int, default=d.max_client_batch_size)
    tei.add_argument("--max-batch-tokens", type=int, default=d.max_batch_tokens)
    tei.add_argument("--max-batch-requests", type=int, default=None)
    tei.add_argument("--max-concurrent-requests", type=int, default=d.max_concurrent_requests)
    tei.add_argument(
        "--max-input-length",
        type=int,
        default=d.max_input_length,
        help="the model's longest input, tokens (TEI reads it from the model)",
    )
    tei.add_argument(
        "--auto-truncate",
        nargs="?",
        type=_bool,
        const=True,
        metavar="true|false",
        help="truncate when the request does not say (default: true from 1.9, false before)",
    )
    tei.add_argument(
        "--prompt",
        action="append",
        type=_prompt,
        metavar="NAME=TEXT",
        help="a prompt of the model's configuration (repeatable; default: query and passage)",
    )
    prompt = tei.add_mutually_exclusive_group()
    prompt.add_argument("--default-prompt", help="prepended when a request names no prompt")
    prompt.add_argument("--default-prompt-name", help="the prompt used when a request names none")

    gpu = parser.add_argument_group("simulated GPU")
    gpu.add_argument(
        "--no-internal-batching",
        dest="internal_batching",
        action="store_false",
        help="run each request as its own forward pass, one at a time",
    )
    gpu.add_argument(
        "--base-ms", type=float, default=d.base_ms, help="cost of a pass below the knee"
    )
    gpu.add_argument(
        "--knee-tokens", type=int, default=d.knee_tokens, help="tokens a pass takes at base cost"
    )
    gpu.add_argument(
        "--per-token-us", type=float, default=d.per_token_us, help="cost per token past the knee"
    )
    gpu.add_argument(
        "--backend-replicas", type=int, default=d.backend_replicas, help="passes that run at once"
    )
    gpu.add_argument("--vector-cache-size", type=int, default=d.vector_cache_size)

    real = parser.add_argument_group("real forward pass (needs the [torch] extra)")
    real.add_argument(
        "--backend",
        choices=BACKENDS,
        default=d.backend,
        help="cost-model: a sleep per pass (default); torch: a random-weight encoder runs it",
    )
    real.add_argument(
        "--model", choices=list(MODELS), default=d.model, help="torch: whose dimensions (bert-base)"
    )
    real.add_argument(
        "--device", choices=DEVICES, default=d.device, help="torch: auto = cuda if there is one"
    )
    real.add_argument("--torch-threads", type=int, help="torch: CPU threads (default: torch's)")


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """Build settings from parsed flags; a bad value exits with status 2 and one line saying why."""
    prompts = dict(args.prompt) if args.prompt else dict(DEFAULT_PROMPTS)
    try:
        return _settings(args, prompts)
    except ValueError as e:
        print(f"embedding-proxy simulate-tei: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _settings(args: argparse.Namespace, prompts: dict[str, str]) -> SimulatorSettings:
    if args.backend == "torch" and args.dimensions is not None:
        raise ValueError("--dimensions goes with the cost model; with torch, the model decides")
    return SimulatorSettings(
        host=args.host,
        port=args.port,
        model_id=args.model_id,
        dimensions=768 if args.dimensions is None else args.dimensions,
        max_client_batch_size=args.max_client_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_concurrent_requests=args.max_concurrent_requests,
        max_input_length=args.max_input_length,
        auto_truncate=args.auto_truncate,
        payload_limit=args.payload_limit,
        api_key=args.api_key,
        prompts=prompts,
        default_prompt=args.default_prompt,
        default_prompt_name=args.default_prompt_name,
        tei_version=args.tei_version,
        model_type=args.model_type,
        served_model_name=args.served_model_name,
        cors_allow_origin=args.cors_allow_origin,
        internal_batching=args.internal_batching,
        base_ms=args.base_ms,
        knee_tokens=args.knee_tokens,
        per_token_us=args.per_token_us,
        backend_replicas=args.backend_replicas,
        vector_cache_size=args.vector_cache_size,
        backend=args.backend,
        model=args.model,
        device=args.device,
        torch_threads=args.torch_threads,
    )
