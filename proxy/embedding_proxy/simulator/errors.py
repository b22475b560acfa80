"""TEI's error vocabulary: error types, their status codes, and the two body shapes.

Mirrors `router/src/lib.rs` and `router/src/http/server.rs` of text-embeddings-inference: the
`error_type` is serialised with its Rust variant name (`"Validation"`, `"Overloaded"`, ...), and the
status code follows from the type alone (a Validation error is 413, whatever caused it).
"""

from __future__ import annotations

from enum import StrEnum

import orjson


class ErrorType(StrEnum):
    UNHEALTHY = "Unhealthy"
    BACKEND = "Backend"
    OVERLOADED = "Overloaded"
    VALIDATION = "Validation"
    TOKENIZER = "Tokenizer"
    EMPTY = "Empty"


STATUS = {
    ErrorType.UNHEALTHY: 503,
    ErrorType.BACKEND: 424,
    ErrorType.OVERLOADED: 429,
    ErrorType.TOKENIZER: 422,
    ErrorType.VALIDATION: 413,
    ErrorType.EMPTY: 400,
}

# TEI's core errors print with these prefixes (`TextEmbeddingsError`'s Display).
_PREFIX = {
    ErrorType.VALIDATION: "Input validation error: ",
    ErrorType.EMPTY: "Input validation error: ",
    ErrorType.BACKEND: "Backend error: ",
    ErrorType.TOKENIZER: "tokenizer error ",
}


class TeiError(Exception):
    """An error TEI answers with `{"error", "error_type"}` (or the OpenAI-style shape)."""

    def __init__(self, error_type: ErrorType, message: str, *, prefixed: bool = False) -> None:
        if prefixed:
            message = _PREFIX.get(error_type, "") + message
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        return STATUS[self.error_type]

    def native_body(self) -> bytes:
        return orjson.dumps({"error": self.message, "error_type": self.error_type.value})

    def openai_body(self) -> bytes:
        return orjson.dumps(
            {"message": self.message, "code": self.status, "type": self.error_type.value}
        )


def overloaded() -> TeiError:
    return TeiError(ErrorType.OVERLOADED, "Model is overloaded")


class Rejection(Exception):
    """A request refused before it reaches a handler, as axum's extractors refuse it: a status
    and a plain-text body (TEI does not wrap these in its JSON error shape)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


UNSUPPORTED_MEDIA_TYPE = Rejection(415, "Expected request with `Content-Type: application/json`")
BODY_TOO_LARGE = Rejection(413, "Failed to buffer the request body: length limit exceeded")


def syntax_error(detail: str) -> Rejection:
    return Rejection(400, f"Failed to parse the request body as JSON: {detail}")


def data_error(path: str, detail: str) -> Rejection:
    where = f"{path}: " if path else ""
    text = f"Failed to deserialize the JSON body into the target type: {where}{detail}"
    return Rejection(422, text)
