"""HTTP to the proxies' metrics ports: a session of its own, so that the API credentials are
never sent to pods. Only I/O lives here; `scrape` reads what comes back."""

from __future__ import annotations

import asyncio

import aiohttp


class MetricsFetcher:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def texts(self, urls: list[str]) -> list[str | None]:
        """GET each URL at once; None for a pod that did not answer 200 in time."""
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
                    return await resp.text() if resp.status == 200 else None
            except (TimeoutError, aiohttp.ClientError):
                return None

        return list(await asyncio.gather(*(one(u) for u in urls)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
