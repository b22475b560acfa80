"""TEI's error vocabulary: error types, their status codes, and the two body shapes.

Mirrors `router/src/lib.rs` and `router/src/http/server.rs` of text-embeddings-inference: the
`error_type` is serialised with its Rust variant name (`"Validation"`, `"Overloaded"`, ...), and the
status code follows from the type alone (`From<&ErrorType> for StatusCode`). TEI 1.9 answers a
Validation error with 422; up to 1.8 it answered 413 (PAYLOAD_TOO_LARGE).
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
    ErrorType.VALIDATION: 422,
    ErrorType.EMPTY: 400,
}
STATUS_BEFORE_1_9 = {**STATUS, ErrorType.VALIDATION: 413}

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
        """The status TEI 1.9 answers with."""
        return STATUS[self.error_type]

    def status_for(self, before_1_9: bool) -> int:
        return (STATUS_BEFORE_1_9 if before_1_9 else STATUS)[self.error_type]

    def native_body(self) -> bytes:
        return orjson.dumps({"error": self.message, "error_type": self.error_type.value})

    def openai_body(self, status: int) -> bytes:
        # `OpenAICompatErrorResponse` renames its `error_type` field to `type` when serialised
        # (router/src/http/types.rs); TEI's OpenAPI document still calls it `error_type`.
        return orjson.dumps(
            {"message": self.message, "code": status, "type": self.error_type.value}
        )


def overloaded() -> TeiError:
    return TeiError(ErrorType.OVERLOADED, "Model is overloaded")


def backend(message: str) -> TeiError:
    """`TextEmbeddingsError::Backend(BackendError::Inference(message))`, as TEI prints it."""
    return TeiError(ErrorType.BACKEND, message, prefixed=True)


class Rejection(Exception):
    """A request refused before it reaches a handler, as axum's extractors refuse it: a status
    and a plain-text body (TEI does not wrap these in its JSON error shape). `detail` is serde's
    own message, which TEI answers as a Validation error where it parses a value itself
    (`/vertex`'s instances)."""

    def __init__(self, status: int, text: str, detail: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.detail = detail or text


UNSUPPORTED_MEDIA_TYPE = Rejection(415, "Expected request with `Content-Type: application/json`")
BODY_TOO_LARGE = Rejection(413, "Failed to buffer the request body: length limit exceeded")


def syntax_error(detail: str) -> Rejection:
    return Rejection(400, f"Failed to parse the request body as JSON: {detail}")


def data_error(path: str, detail: str) -> Rejection:
    where = f"{path}: " if path else ""
    text = f"Failed to deserialize the JSON body into the target type: {where}{detail}"
    return Rejection(422, text, detail)
