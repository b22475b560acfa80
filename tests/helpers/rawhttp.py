"""Reading HTTP/1.1 answers off a raw socket, for tests that write their requests byte by byte."""

from __future__ import annotations

import asyncio


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (names lowercased) of an answer's head, blank line included."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def read_answer(
    reader: asyncio.StreamReader, timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """One answer framed by Content-Length; `timeout` for each of its head and body."""
    status, headers = parse_head(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout))
    length = int(headers.get("content-length", 0))
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    return status, headers, body
