"""`--backend torch`: each batch through a real encoder instead of a sleep.

The encoder is a transformers `BertModel` built in code from the dimensions of a real model (layers,
hidden size, heads, intermediate size, vocabulary), with random weights: a pass costs what it costs
with trained weights, and nothing is downloaded (no hub access; `HF_HUB_OFFLINE` is set). Input ids
come from the simulator's own tokenizer (`tokens.py`: one id per word, `[CLS]` and `[SEP]` around),
so a pass sees exactly the tokens the cost model would have counted. The last hidden state is
pooled as the real model's TEI pools it (mean over the input's tokens, or its `[CLS]` token), and
each input's answer is that pooled vector (normalised, or cut to `dimensions`, per request).

It runs on CUDA in float16 when there is a GPU, else on the CPU in float32. Passes run in one
thread of their own, one after another as on one GPU, so the event loop keeps answering meanwhile.

torch and transformers are an optional extra (`pip install 'embedding-proxy[torch]'`); they are
imported only when this backend starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..failure import Failure
from .errors import ErrorType, TeiError
from .gpu import Engine, Entry
from .tokens import CLS_ID, PAD_ID, SEP_ID, VOCAB_SIZE, Encoded, token_id

log = logging.getLogger("embedding_proxy.simulator")


@dataclass(frozen=True)
class ModelSpec:
    """The dimensions of a real encoder (from its config.json), and how TEI pools it."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    pooling: str  # "mean" or "cls", as in the model's sentence-transformers pooling config
    like: str  # the real model these dimensions are taken from
    vocab: int = VOCAB_SIZE
    max_positions: int = 512


MODELS = {
    "minilm-l6": ModelSpec(6, 384, 12, 1536, "mean", "sentence-transformers/all-MiniLM-L6-v2"),
    "bert-base": ModelSpec(12, 768, 12, 3072, "mean", "google-bert/bert-base-uncased"),
    "bge-large": ModelSpec(24, 1024, 16, 4096, "cls", "BAAI/bge-large-en-v1.5"),
    # For tests: two small layers, so a pass costs milliseconds on any CPU.
    "tiny": ModelSpec(2, 64, 2, 128, "mean", "a test encoder"),
}
DEVICES = ("auto", "cuda", "cpu")
SEED = 0  # every simulator process builds the same weights, so answers are reproducible


def import_torch() -> tuple[Any, Any]:
    """torch and transformers, or a Failure that says how to install them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from a config: never ask the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        import transformers
    except ImportError as e:
        raise Failure(
            "--backend torch needs torch and transformers",
            str(e),
            "install them with pip install 'embedding-proxy[torch]'",
            2,
        ) from None
    return torch, transformers


def input_ids(encoded: Encoded, vocab: int = VOCAB_SIZE) -> list[int]:
    """The ids a pass sees for one input: exactly `encoded.tokens` of them.

    Words get the simulator's stable per-word ids; token-id inputs keep their ids (wrapped into
    the vocabulary). Whatever the tokenizer counted beyond the words are special tokens:
    `[CLS]` first, `[SEP]` after (one for a text, two for a pair, none for bare ids).
    """
    body = [p % vocab if isinstance(p, int) else token_id(p) % vocab for p in encoded.pieces]
    extra = encoded.tokens - len(body)
    if extra <= 0:
        return body
    return [CLS_ID, *body, *[SEP_ID] * (extra - 1)]


class Encoder:
    """A random-weight BERT of a real model's dimensions, on a device, ready for batches."""

    def __init__(self, name: str, device: str = "auto", threads: int | None = None) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        torch, transformers = import_torch()
        self.torch = torch
        self.name = name
        self.spec = spec = MODELS[name]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise Failure("--device cuda", "torch sees no CUDA device", "use --device cpu", 2)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        config = transformers.BertConfig(
            vocab_size=spec.vocab,
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            intermediate_size=spec.intermediate,
            max_position_embeddings=spec.max_positions,
            attn_implementation="sdpa",
        )
        torch.manual_seed(SEED)
        model = transformers.BertModel(config, add_pooling_layer=False)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()

    @property
    def dtype_name(self) -> str:
        return "float16" if self.dtype == self.torch.float16 else "float32"

    def describe(self) -> str:
        torch = self.torch
        threads = torch.get_num_threads()
        where = f"CPU, {threads} thread{'s' if threads != 1 else ''}"
        if self.device.type == "cuda":
            where = torch.cuda.get_device_name(self.device)
        s = self.spec
        return (
            f"{self.name} with random weights ({s.layers} layers, hidden {s.hidden}, {s.heads} "
            f"heads, as {s.like}), {self.dtype_name} on {where}, torch {torch.__version__}"
        )

    def __call__(self, batch: list[list[int]]) -> Any:
        """Pooled float32 vectors (a numpy array, one row per input) for a batch of id lists,
        padded to the longest with an attention mask."""
        torch = self.torch
        longest = max(map(len, batch))
        ids = torch.full((len(batch), longest), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            if self.spec.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
            return pooled.cpu().numpy()  # waits for the device: the pass is over


@dataclass
class TorchEngine(Engine):
    """TEI's queue and batching (as `Engine`), with each pass run by `encoder` in a thread."""

    encoder: Encoder | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tei-sim-forward")
    )

    async def forward(self, batch: list[Entry], tokens: int) -> Any:
        assert self.encoder is not None
        vocab = self.encoder.spec.vocab
        ids = [input_ids(e.payload, vocab) for e in batch]
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self.encoder, ids)
        except Exception as e:  # out of memory, say: TEI answers such a pass with a Backend error
            log.exception("forward pass of %d inputs, %d tokens failed", len(batch), tokens)
            raise TeiError(ErrorType.BACKEND, str(e) or type(e).__name__, prefixed=True) from e

    async def stop(self) -> None:
        await super().stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


def load_engine(name: str, device: str, threads: int | None, **engine: Any) -> TorchEngine:
    """Build the encoder of model `name`, run one pass so the first request does not pay for
    warming up, and wrap it in TEI's batching."""
    encoder = Encoder(name, device, threads)
    encoder([[CLS_ID, *range(1000, 1014), SEP_ID]] * 2)
    log.info("torch backend: %s", encoder.describe())
    return TorchEngine(
        encoder=encoder, model_dtype=encoder.dtype_name, pooling=encoder.spec.pooling, **engine
    )
