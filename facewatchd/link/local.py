"""The in-process link: the embedded default. The resolver runs in the daemon's own event loop and
answers through an in-process shadow with AWS semantics (desired/reported/delta, versions), exactly as
it would through AWS IoT, so the daemon cannot tell the difference. No broker, no cloud.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

import structlog
from pydantic import BaseModel, ConfigDict

from facewatchd.messages import FaceQuery
from facewatchd.shadow.store import ShadowStore

log = structlog.get_logger("facewatchd.link.local")


class LocalLinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["local"] = "local"


class ShadowHub:
    """Shadow documents (persisted by ShadowStore) plus delta fan-out to in-process subscribers."""

    def __init__(self, store: ShadowStore) -> None:
        self.store = store
        self._subscribers: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}

    def update(self, thing: str, request: dict[str, Any]) -> Any:
        result = self.store.update(thing, request)  # one small SQLite transaction
        if result.delta:
            for queue in self._subscribers.get(thing, []):
                queue.put_nowait(result.delta["state"])
        return result

    def current_delta(self, thing: str) -> dict[str, Any] | None:
        doc = self.store.get(thing)
        return (doc.delta_state() or None) if doc else None

    def subscribe(self, thing: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.setdefault(thing, []).append(queue)
        return queue

    def unsubscribe(self, thing: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.get(thing, []).remove(queue)


class HubShadowPort:
    """The resolver's ShadowPort over the hub."""

    def __init__(self, hub: ShadowHub) -> None:
        self.hub = hub

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        self.hub.update(thing, {"state": {"desired": desired}})


class LocalLink:
    def __init__(self, thing: str, hub: ShadowHub, resolve: Callable[[FaceQuery], Awaitable[Any]]) -> None:
        self.thing = thing
        self.hub = hub
        self._resolve = resolve
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()  # as a queue-fed resolver does: answers in the order sent

    @property
    def online(self) -> bool:
        return self._queue is not None

    async def __aenter__(self) -> "LocalLink":
        self._queue = self.hub.subscribe(self.thing)
        pending = self.hub.current_delta(self.thing)
        if pending:  # answers (or labels) that arrived while the daemon was not running
            self._queue.put_nowait(pending)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self._queue is not None:
            self.hub.unsubscribe(self.thing, self._queue)
            self._queue = None

    async def send_query(self, query: FaceQuery) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, query: FaceQuery) -> None:
        try:
            async with self._one_at_a_time:
                await self._resolve(query)
        except Exception as e:  # the request stays in the outbox and is retried later
            log.error("resolver_failed", face_id=query.face_id, error=repr(e))

    async def deltas(self) -> AsyncIterator[dict[str, Any]]:
        assert self._queue is not None, "use the link as an async context manager"
        while True:
            yield await self._queue.get()

    async def update_shadow(self, state: dict[str, Any]) -> None:
        self.hub.update(self.thing, {"state": state})
