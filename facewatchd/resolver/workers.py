"""What the on-prem resolver service needs of its storage beyond the ports, so that one worker or several can
run it: where the shadow documents live, how a face is prepared before it is decided, and what makes
deciding safe when several workers decide at once.

- One worker on SQLite and files (`LocalWorkerStores`, the default): messages are handled one at a time in
  one process, so deciding needs no lock, and the shadows are a SQLite file beside the collection.
- Several workers on PostgreSQL (`resolver/postgres/stores.py`): each embeds its face first, in parallel,
  then decides under one advisory lock; the shadows are in the same database, so any worker serves them.
  Workers share the device uplink through an MQTT shared subscription (`[server] share_group`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncContextManager, Awaitable, Callable, Protocol

from facewatchd.messages import FaceQuery
from facewatchd.resolver.core import alone
from facewatchd.resolver.local import LocalResolverStores
from facewatchd.resolver.ports import CropStore, FaceCollection, NameDirectory
from facewatchd.shadow.store import ShadowStore


class ShadowDocuments(Protocol):
    """What the shadow service stores documents in (shadow/store.py's ShadowStore, or PostgreSQL's)."""

    def update(self, thing: str, request: Any, shadow_name: str | None = None, now: int | None = None) -> Any: ...

    def get(self, thing: str, shadow_name: str | None = None) -> Any: ...

    def delete(self, thing: str, shadow_name: str | None = None, request: Any = None,
               now: int | None = None) -> dict[str, Any]: ...

    def close(self) -> None: ...


class WorkerStores(Protocol):
    crops: CropStore
    collection: FaceCollection
    names: NameDirectory

    async def prepare(self, query: FaceQuery) -> None:
        """The costly part before deciding (embedding the crop), outside `deciding`; raises NoFaceError."""

    def deciding(self) -> AsyncContextManager[None]:
        """Held while one face is decided and recorded (the core takes it): no other worker decides meanwhile."""

    def open_shadow_store(self, data_dir: Path) -> ShadowDocuments:
        """Where this worker's shadow service keeps the device shadows."""

    async def lead_shadows(self, on_lead: Callable[[], Awaitable[None]]) -> None:
        """Several workers: wait until this one's shadow service is the one to take device requests, await
        `on_lead`, and return or raise when it no longer is (shadow/service.py `ShadowService.follow`)."""

    async def share_key(self) -> str | None:
        """A secret every worker of the group reads alike and no device sees (None: one worker alone); see
        `share_group_name`."""


class LocalWorkerStores(LocalResolverStores):
    """The single worker's stores: SQLite and files in its data directory."""

    async def prepare(self, query: FaceQuery) -> None:
        return None  # one process decides one message at a time: embedding inside the decision costs nothing

    deciding = staticmethod(alone)  # the core's own no-lock: it then skips the re-check a shared store needs

    def open_shadow_store(self, data_dir: Path) -> ShadowDocuments:
        return ShadowStore(data_dir / "shadows.db")

    async def share_key(self) -> str | None:
        return None

    async def lead_shadows(self, on_lead: Callable[[], Awaitable[None]]) -> None:
        await on_lead()  # alone: it always leads
        await asyncio.Event().wait()


def share_group_name(group: str, key: str | None) -> str:
    """The shared subscription's group: the configured name and the workers' share key.

    Mosquitto 2.0 grants any client any subscription and applies its ACL to each message as it delivers it. A
    device (or a stolen device certificate) that subscribes to $share/<group>/facewatchd/+/faces/unknown
    becomes a member: the broker hands it its turn of every device's requests, finds it may not read them,
    and drops them, so other devices wait on resends. With a key that only the workers can read (from
    their database), the group a device can name is never the workers' group: it is a share of its own."""
    if not key:
        raise ValueError("several workers need a share key from their shared store ([resolver] type = "
                         "\"postgresql\")")
    return f"{group}-{key}"
