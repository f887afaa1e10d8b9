"""The PostgreSQL adapters opened together over one database."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import AsyncContextManager, Awaitable, Callable

import numpy as np

from facewatchd.messages import FaceQuery
from facewatchd.resolver.postgres.collection import PostgresFaceCollection
from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.crops import PostgresCropStore
from facewatchd.resolver.postgres.database import Database
from facewatchd.resolver.postgres.names import PostgresNameDirectory
from facewatchd.resolver.postgres.shadows import PostgresShadowStore


class PostgresResolverStores:
    """The adapters over one database: `async with PostgresResolverStores(config, embed_crop) as stores:`
    migrates the schema and opens the pool."""

    def __init__(self, config: PostgresResolverConfig, embed_crop: Callable[[bytes], np.ndarray | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.db = Database(config)
        self.crops = PostgresCropStore(self.db)
        self.collection = PostgresFaceCollection(self.db, embed_crop)
        self.names = PostgresNameDirectory(self.db, clock)

    async def prepare(self, query: FaceQuery) -> None:
        """Embed the crop before deciding (kept for the search and index that follow): workers embed at
        once, and only the short decision waits for the lock."""
        await self.collection.embedding(query)

    def deciding(self) -> AsyncContextManager[None]:
        return self.db.deciding()

    async def lead_shadows(self, on_lead: Callable[[], Awaitable[None]]) -> None:
        await self.db.lead(on_lead)

    async def share_key(self) -> str:
        """Made by the schema's second migration, once for every worker of this database."""
        row = await self.db.fetchone("SELECT value FROM cluster_secrets WHERE name = 'share_key'")
        if row is None:
            raise RuntimeError("cluster_secrets has no share_key: schema migration 2 makes it; was the row deleted? "
                               "(restore it with one value for every worker)")
        return str(row[0])

    def open_shadow_store(self, data_dir: Path | None = None) -> PostgresShadowStore:
        """The device shadows in the same database, for every worker (open after this is entered: the
        schema is there); `data_dir` is not used."""
        return PostgresShadowStore(self.config.dsn.get_secret_value(), timeout_s=self.config.connect_timeout_s)

    async def __aenter__(self) -> "PostgresResolverStores":
        await self.db.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.db.__aexit__(exc_type, exc, tb)
