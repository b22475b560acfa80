"""Secrets masked out of text that is shown: in /ready, error bodies and logs."""

from __future__ import annotations

import re

_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>]*")
# Up to the URL's last `@`: a password may hold an unencoded `#`, `/` or `?`, which end the
# authority for a URL parser but not for whoever reads the text (a path's `@` is masked too).
_USERINFO = re.compile(r"^([^:]+://).*@")
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")


def redact(text: str) -> str:
    """`text` with the secrets of every URL in it masked: its credentials (`http://user:pw@host`)
    and its query values (`?api_key=...`). The upstream URL may carry either, and it is shown in
    /ready, in error bodies and in logs."""
    return _URL.sub(_redact_url, text)


def _redact_url(match: re.Match[str]) -> str:
    return _QUERY_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", match.group()))
