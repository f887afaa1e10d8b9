"""The PostgreSQL resolver's settings (`[resolver] type = "postgresql"`). Imports no driver: app/config.py reads
it without the postgres extra installed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class PostgresResolverConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["postgresql"] = "postgresql"
    dsn: SecretStr = Field(description="libpq connection string or URI of a PostgreSQL with pgvector, e.g. "
                           "postgresql://facewatchd@db.example:5432/facewatchd (a password may sit in it: kept secret)")
    templates_per_person: int = Field(5, ge=1, le=100, description="faces kept per person in the collection")
    pool_size: int = Field(4, ge=2, le=64, description="connections per worker (one holds the decision lock)")
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="how long a call waits for a connection "
                                     "before it fails with a clear error (the device resends)")
    # bench/onprem_scale.py --search-sizes 100000: a second photo finds its person's first among 100,000
    # synthetic persons 69 % of the time at 100, 92 % at 400 (p95 13 ms), 100 % at 1000 (p95 43 ms)
    hnsw_ef_search: int = Field(400, ge=10, le=1000, description="HNSW candidates per search (pgvector's "
                                "hnsw.ef_search): higher finds more true nearest faces, slower")
