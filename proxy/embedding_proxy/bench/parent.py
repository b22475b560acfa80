"""A load generator's side of its protocol with the bench (procs.LoadProcess), one JSON line
each way on stdin/stdout: the spec in, {"phase": "warm"} out, {"go": true} in, the result out."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson


class Parent:
    def __init__(self, reader: asyncio.StreamReader, name: str) -> None:
        self.reader = reader
        self.name = name  # for the one line said when the bench goes away

    @classmethod
    async def connect(cls, name: str) -> Parent:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader, name)

    async def receive(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise SystemExit(f"bench {self.name}: parent closed stdin")
        return orjson.loads(line)

    def send(self, obj: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
        sys.stdout.flush()

    async def warm(self) -> None:
        """Say the warm-up is done, and wait for the go."""
        self.send({"phase": "warm"})
        await self.receive()
