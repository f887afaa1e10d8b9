"""What the tests against a real Home Assistant share (tests/support/homeassistant.py runs HA; the `ha`
and `client` fixtures are in conftest.py): one facewatchd thing per test, its plugins fed hook calls, and
waits on what HA makes of them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.plugins import PluginHost
from tests.plugins.support import eventually
from tests.support.broker import HOST, Mosquitto, free_port
from tests.support.daemon import FIXTURES, make_config
from tests.support.homeassistant import HaClient, HomeAssistant


@dataclass
class Ha:
    home: HomeAssistant
    broker: Mosquitto
    mqtt_entry: str


class TcpProxy:
    """A loopback forwarder to the broker that a test opens and closes: the broker is away for the plugin
    only, while HA stays connected."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def node(thing: str) -> str:
    return f"facewatchd_{thing}"


def config_for(tmp_path: Path, thing: str, port: int, camera_ids: tuple[str, ...] = ("front",),
               **options: Any) -> Any:
    return make_config(tmp_path / "state", device={"thing": thing},
                       cameras=[{"id": c, "source": str(FIXTURES / "obama.jpg")} for c in camera_ids],
                       plugins={"homeassistant": {"host": HOST, "port": port, "reconnect_min_s": 0.1,
                                                  "reconnect_max_s": 0.3, **options}})


@contextlib.asynccontextmanager
async def running(config: Any) -> AsyncIterator[PluginHost]:
    host = PluginHost(config)
    host.load()
    await host.start()
    try:
        yield host
    finally:
        await host.drain()
        await host.stop()


def face(camera: str, track: str, person_id: str | None = None, name: str | None = None) -> FaceEvent:
    return FaceEvent(camera=camera, track_id=track, ts=time.time(), person_id=person_id, name=name,
                     similarity=0.61, source="cache")


async def listening(ha: Ha, thing: str, camera: str = "front") -> None:
    """HA has subscribed to the camera's event topic: an event (not retained) published now reaches it."""
    await eventually(lambda: ha.broker.subscribed(f"facewatchd/{thing}/{camera}/recognised"),
                     what=f"HA to subscribe to {camera}'s events")


def ended(camera: str, track: str, person_id: str | None = None) -> TrackEnded:
    return TrackEnded(face(camera, track, person_id), dwell_s=1.0, frames=5)


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll an async check (HA's registries, states) with a deadline; returns its last true value."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def state_of(client: HaClient, unique_id: str, expected: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = await client.state(unique_id)
        return state if state is not None and state["state"] == expected else None

    return await until(check, f"{unique_id} to be {expected!r} in HA (now {await client.state(unique_id)})")
