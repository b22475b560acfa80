"""The simulator's tokenizer: one token per whitespace-separated word, plus two special tokens.

`count_tokens("What is Deep Learning?") == 6` ([CLS] What is Deep Learning? [SEP]). A benchmark can
therefore build an input of exactly N tokens with `" ".join(["word"] * (N - 2))`. Token ids given
directly (a list of ints) count one token each, with no special tokens added, as TEI re-encodes
them without special tokens.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import ErrorType, TeiError

CLS_ID, SEP_ID, PAD_ID, UNK_ID = 101, 102, 0, 100
SPECIAL_TOKENS = {CLS_ID: "[CLS]", SEP_ID: "[SEP]", PAD_ID: "[PAD]", UNK_ID: "[UNK]"}
VOCAB_SIZE = 30522
FIRST_WORD_ID = 1000
# TEI refuses (without truncation) inputs longer than max_input_length * 250 characters.
MAX_CHAR_MULTIPLIER = 250
_WORD = re.compile(r"\S+")

Piece = str | int


def count_tokens(text: str) -> int:
    """Tokens the simulator counts for `text`: its whitespace-separated words plus 2 specials."""
    return len(text.split()) + 2


def token_id(word: str) -> int:
    """A stable id in a BERT-sized vocabulary, above the special tokens."""
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return FIRST_WORD_ID + int.from_bytes(digest, "little") % (VOCAB_SIZE - FIRST_WORD_ID)


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """Words with their character offsets (start, stop), as TEI's /tokenize reports them."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One input after tokenization: what its vector derives from and what it costs."""

    key: bytes  # the vector is a function of this (text after prompt and truncation, or ids)
    tokens: int
    chars: int  # as TEI counts `x-compute-characters`: the input's characters, or its ids
    pieces: tuple[Piece, ...]  # words or ids kept (no specials)


def text_key(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def ids_key(ids: list[int] | tuple[int, ...]) -> bytes:
    # A NUL-led prefix keeps token-id inputs apart from any ordinary text.
    return b"\x00ids:" + ",".join(map(str, ids)).encode()


def _keep(pieces: list[Piece], keep: int, direction: str) -> list[Piece]:
    keep = max(keep, 0)
    if len(pieces) <= keep:
        return pieces
    return pieces[len(pieces) - keep :] if direction == "Left" else pieces[:keep]


def _too_many_tokens(tokens: int, max_input_length: int) -> TeiError:
    return TeiError(
        ErrorType.VALIDATION,
        f"`inputs` must have less than {max_input_length} tokens. Given: {tokens}",
        prefixed=True,
    )


def check_characters(chars: int, max_input_length: int) -> None:
    """TEI refuses, before tokenizing, an input of more than `max_input_length * 250` characters
    that it may not truncate (core/src/tokenization.rs, `tokenize_input`); /tokenize never may."""
    limit = max_input_length * MAX_CHAR_MULTIPLIER
    if chars > limit:
        raise TeiError(
            ErrorType.VALIDATION,
            f"`inputs` must have less than {limit} characters. Given: {chars}",
            prefixed=True,
        )


def encode(
    value: str | list[int],
    *,
    truncate: bool,
    direction: str = "Right",
    max_input_length: int,
    prompt: str | None = None,
) -> Encoded:
    """Tokenize one input, with TEI's validation (errors are TEI's, message for message)."""
    if len(value) == 0:
        raise TeiError(ErrorType.EMPTY, "`inputs` cannot be empty", prefixed=True)
    chars = len(value)  # TEI counts a text's characters (before the prompt) and ids one each
    if isinstance(value, str):
        if not truncate:
            check_characters(chars, max_input_length)
        # With truncation TEI cuts the text to the character limit before tokenizing it.
        text = value[: max_input_length * MAX_CHAR_MULTIPLIER]
        text = text if prompt is None else prompt + text
        pieces: list[Piece] = list(text.split())
        specials = 2
    else:
        prompt_words: list[Piece] = list(prompt.split()) if prompt else []
        pieces = [*prompt_words, *value]
        specials = 2 if prompt else 0
        text = None
    tokens = len(pieces) + specials
    if tokens > max_input_length:
        if not truncate:
            raise _too_many_tokens(tokens, max_input_length)
        pieces = _keep(pieces, max_input_length - specials, direction)
        tokens = len(pieces) + specials
        text = None  # truncated: the vector follows the words kept
    if text is not None:
        key = text_key(text)
    elif isinstance(value, str):
        key = text_key(" ".join(map(str, pieces)))
    else:
        key = ids_key(pieces)  # type: ignore[arg-type]
    return Encoded(key=key, tokens=tokens, chars=chars, pieces=tuple(pieces))


def encode_pair(
    first: str,
    second: str,
    *,
    truncate: bool,
    direction: str,
    max_input_length: int,
    prompt: str | None = None,
) -> Encoded:
    """A (query, text) pair as a cross-encoder sees it: [CLS] a [SEP] b [SEP]. TEI applies its
    default prompt to every input, and refuses it for a pair."""
    if not first and not second:
        raise TeiError(ErrorType.EMPTY, "`inputs` cannot be empty", prefixed=True)
    chars = len(first) + len(second)
    if not truncate:
        check_characters(chars, max_input_length)
    if prompt is not None:
        raise TeiError(
            ErrorType.VALIDATION, "`prompt_name` cannot be set with dual inputs", prefixed=True
        )
    a, b = first.split(), second.split()
    tokens = len(a) + len(b) + 3
    if tokens > max_input_length:
        if not truncate:
            raise _too_many_tokens(tokens, max_input_length)
        while len(a) + len(b) + 3 > max_input_length and (a or b):
            longer = a if len(a) >= len(b) else b  # tokenizers' "longest first" strategy
            del longer[0 if direction == "Left" else -1]
        tokens = len(a) + len(b) + 3
        first, second = " ".join(a), " ".join(b)
    key = text_key(first) + b"\x00pair\x00" + text_key(second)
    return Encoded(key=key, tokens=tokens, chars=chars, pieces=(*a, *b))
