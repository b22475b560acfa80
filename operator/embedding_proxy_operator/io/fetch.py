"""HTTP to the proxies' metrics ports: a session of its own, so that the API credentials are
never sent to pods. Only I/O lives here; `scrape` reads what comes back."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

# URLs remembered as over the cap (so that each is logged once, not at every poll); cleared
# when it grows past this, so that pods coming and going cannot grow it without bound.
MAX_REMEMBERED = 1024


class MetricsFetcher:
    def __init__(
        self,
        timeout_seconds: float,
        max_bytes: int = 1 << 20,
        logger: logging.Logger | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_bytes = max_bytes
        self._logger = logger or logging.getLogger(__name__)
        self._session: aiohttp.ClientSession | None = None
        self._oversized: set[str] = set()

    async def texts(self, urls: list[str]) -> list[str | None]:
        """GET each URL at once; None for a pod that did not answer 200 in time, or whose page
        is longer than the cap (a pod must not be able to fill the operator's memory)."""
        if self._session is None:
            # One session for every EmbeddingProxy's daemon: no pool limit, so that a scrape never
            # spends its timeout waiting for another daemon's connections to free up.
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0)
            )
        session = self._session

        async def one(url: str) -> str | None:
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        return None
                    body = await self._read_capped(resp)
            except (TimeoutError, aiohttp.ClientError):
                return None
            if body is None:
                self._note_oversized(url)
                return None
            self._oversized.discard(url)
            # The exposition format is UTF-8.
            return body.decode("utf-8", "replace")

        return list(await asyncio.gather(*(one(u) for u in urls)))

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None as soon as it passes the cap (the rest is never read)."""
        length = resp.content_length
        if length is not None and length > self._max_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.read(64 * 1024)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self._max_bytes:
                return None
            chunks.append(chunk)

    def _note_oversized(self, url: str) -> None:
        if url in self._oversized:
            return
        if len(self._oversized) >= MAX_REMEMBERED:
            self._oversized.clear()
        self._oversized.add(url)
        self._logger.warning(
            "%s: /metrics is longer than %d bytes; the pod counts as not scraped",
            url,
            self._max_bytes,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
