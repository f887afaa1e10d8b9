"""Simulated devices that send real crops the way the daemon does: the real MQTT link, the durable outbox and
the uplink that resends what goes unanswered, and the shadow delta that answers (each label acknowledged,
then cleared from the shadow as the daemon's label handler does)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from facewatchd.link.mqtt import MqttLink, MqttLinkConfig
from facewatchd.messages import FaceQuery
from facewatchd.outbox import Outbox
from facewatchd.pipeline.uplink import Uplink, UplinkConfig


class SimulatedDevice:
    def __init__(self, thing: str, host: str, port: int, folder: Path, answer_timeout_s: float = 3.0) -> None:
        self.thing = thing
        folder.mkdir(parents=True, exist_ok=True)
        self.link = MqttLink(thing, MqttLinkConfig(host=host, port=port, reconnect_min_s=0.1, reconnect_max_s=0.5))
        self.outbox = Outbox(folder / "outbox.db")
        self.uplink = Uplink(self.link, self.outbox, UplinkConfig(answer_timeout_s=answer_timeout_s, retry_max_s=10))
        self.sent_at: dict[str, float] = {}
        self.answers: dict[str, dict[str, Any]] = {}  # face id → its label
        self.latency_s: dict[str, float] = {}  # face id → from submit to its label
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, query: FaceQuery) -> None:
        self.sent_at[query.face_id] = time.monotonic()
        self.uplink.submit(query)

    @property
    def unanswered(self) -> set[str]:
        return set(self.sent_at) - set(self.answers)

    async def _labels(self) -> None:
        async for state in self.link.deltas():
            done = {}
            for face_id, label in (state.get("faces") or {}).items():
                if face_id in self.sent_at and face_id not in self.answers and label:
                    self.answers[face_id] = label
                    self.latency_s[face_id] = time.monotonic() - self.sent_at[face_id]
                self.uplink.acknowledge(face_id)
                done[face_id] = None
            if done:  # keep the shadow bounded, as the daemon does
                with contextlib.suppress(Exception):
                    await self.link.update_shadow({"desired": {"faces": done}})

    async def __aenter__(self) -> "SimulatedDevice":
        await self.link.__aenter__()
        await self.link.wait_online(10)
        self._tasks = [asyncio.create_task(self.uplink.run(self._stop)), asyncio.create_task(self._labels())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.__aexit__(None, None, None)
        self.outbox.close()


async def all_answered(devices: list[SimulatedDevice], timeout: float) -> bool:
    """Wait until every request of every device has its label; False if some are still open at `timeout`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while any(d.unanswered for d in devices):
                await asyncio.sleep(0.05)
    return not any(d.unanswered for d in devices)
