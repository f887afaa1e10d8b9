"""The on-prem resolver service, `facewatchd resolver` (and `facewatchd shadow`): the resolver core over the
local adapters fed by MQTT, the shadow service, the control socket, the review page and systemd, until a
signal. The MQTT side is `facewatchd.resolver.mqtt_adapter`; this module only puts the parts together.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from facewatchd.app.config import Config
from facewatchd.app.wiring import serve_resolver, serve_until_signal
from facewatchd.link.mqtt_client import Backoff
from facewatchd.resolver.mqtt_adapter import (CropEmbedder, ResolverService, ResolverServiceConfig, ServiceStats,
                                              shadow_service)
from facewatchd.resolver.workers import WorkerStores
from facewatchd.shadow.store import ShadowStore
from facewatchd.state import StateDirLock

log = structlog.get_logger("facewatchd.resolver.service")


def service_data_dir(config: Config) -> Path:
    server = config.server or ResolverServiceConfig()
    return server.data_dir or getattr(config.resolver, "data_dir", None) or config.device.state_dir / "resolver"


async def run_resolver(config: Config) -> ServiceStats:
    """`facewatchd resolver`: the resolver service (and, by default, the shadow service) until a signal."""
    server = config.server or ResolverServiceConfig()
    data_dir = service_data_dir(config)
    with StateDirLock(data_dir, "resolver"):
        async with contextlib.AsyncExitStack() as stack:
            stores = await shared_stores(config, stack)
            svc = await stack.enter_async_context(ResolverService(
                server, data_dir, config.detector, config.embedder, config.identity, stores,
                getattr(config.resolver, "templates_per_person", None) if stores else None))
            await serve_resolver(stack, svc.resolver, data_dir, config.web)  # the page: every device's persons
            await serve_until_signal(svc.status)
    return svc.stats


async def shared_stores(config: Config, stack: contextlib.AsyncExitStack) -> WorkerStores | None:
    """The PostgreSQL stores every worker shares (`[resolver] type = "postgresql"`), open until `stack` closes;
    None for the single worker's SQLite and files."""
    if config.resolver.type != "postgresql":  # the config refuses a share_group without it
        return None
    from facewatchd.resolver.postgres.database import PostgresUnavailable
    from facewatchd.resolver.postgres.stores import PostgresResolverStores

    backoff = Backoff(1.0, 30.0)
    while True:  # a database that is not up yet (or is restarting) is waited for, never a crash loop
        try:
            return await stack.enter_async_context(PostgresResolverStores(
                config.resolver, CropEmbedder(config.detector, config.embedder)))
        except PostgresUnavailable as e:
            delay = backoff.next()
            log.error("postgres_unavailable", error=str(e), retry_in_s=round(delay, 1))
            await asyncio.sleep(delay)


async def run_shadow(config: Config) -> None:
    """`facewatchd shadow`: only the shadow service, for a resolver running with run_shadow_service = false."""
    server = config.server or ResolverServiceConfig()
    data_dir = service_data_dir(config)
    with StateDirLock(data_dir, "shadow"), ShadowStore(data_dir / "shadows.db") as store:
        async with shadow_service(server, store) as svc:
            log.info("shadow_service_started", data_dir=str(data_dir), broker=f"{server.host}:{server.port}")
            await serve_until_signal(lambda: "connected" if svc.connected else "disconnected")
