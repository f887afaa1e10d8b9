"""Each camera's and each person's state here, and how it goes out: the retained states HA's entities show,
the timers that turn them off, and the publishing (in order; offline, the state waits for the reconnect)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine

import structlog

from facewatchd.events import FaceEvent
from plugins._mqtt import MqttUnavailable, PluginMqtt
from plugins.homeassistant.discovery import Discovery, iso

log = structlog.get_logger("facewatchd.plugins.homeassistant")


@dataclass
class PersonState:
    name: str
    home: bool = False
    last_camera: str | None = None
    last_seen: float | None = None
    live_tracks: set[str] = field(default_factory=set)
    away_timer: asyncio.TimerHandle | None = None


@dataclass
class CameraState:
    last_name: str | None = None
    last_attributes: dict[str, Any] = field(default_factory=dict)
    last_known: bool = False  # set in this run: otherwise the retained state from the last run stays as it is
    online: bool = True  # delivers frames (camera_status)
    unknown: bool = False
    unknown_tracks: set[str] = field(default_factory=set)  # live tracks of people without a name
    live_tracks: set[str] = field(default_factory=set)  # every live track: "people in view"
    off_timer: asyncio.TimerHandle | None = None


class EntityStates(Discovery):
    """The cameras and persons this run knows, and their states' publishing; the plugin sets the attributes."""

    mqtt: PluginMqtt | None
    cameras: dict[str, CameraState]
    persons: dict[str, PersonState]
    removals: set[str]
    link_online: bool | None
    _tasks: set[asyncio.Task[None]]

    def person_attributes(self, person_id: str, person: PersonState) -> dict[str, Any]:
        return {"presence": "home" if person.home else "not_home", "person_id": person_id,
                "last_camera": person.last_camera,
                "camera_name": self.camera_name(person.last_camera) if person.last_camera else None,
                "last_seen": iso(person.last_seen) if person.last_seen else None,
                "in_zones": ["home"] if person.home else []}  # HA ≥ 2026 reads presence from in_zones

    async def _remove_person(self, person_id: str) -> None:
        for topic in (*self.person_config_topics(person_id), self.person_topic(person_id, "presence"),
                      self.person_topic(person_id, "attributes")):
            await self._publish(topic, b"", retain=True)
        self.removals.discard(person_id)

    async def _person_discovery(self, person_id: str, person: PersonState) -> None:
        for topic, payload in self.person_configs(person_id, person.name).items():
            await self._publish(topic, payload, retain=True)

    async def _camera_discovery(self, camera: str) -> None:
        for topic, payload in self.camera_configs(camera).items():
            await self._publish(topic, payload if payload is not None else b"", retain=True)

    async def _camera_state(self, camera: str) -> None:
        cam = self.cameras[camera]
        if cam.last_known:  # not at every start: the last run's person stays, and no automation fires
            await self._publish(self.camera_topic(camera, "last_person/attributes"), cam.last_attributes,
                                retain=True)
            await self._publish(self.camera_topic(camera, "last_person"), cam.last_name or "", retain=True)
        await self._publish(self.camera_topic(camera, "unknown_person"), "ON" if cam.unknown else "OFF", retain=True)

    async def _camera_online(self, camera: str) -> None:
        await self._publish(self.camera_topic(camera, "availability"),
                            "online" if self.cameras[camera].online else "offline", retain=True)

    async def _people(self, camera: str) -> None:
        await self._publish(self.camera_topic(camera, "people"), str(len(self.cameras[camera].live_tracks)),
                            retain=True)

    async def _link_state(self) -> None:
        if self.link_online is not None:
            await self._publish(f"{self.base}/link", "ON" if self.link_online else "OFF", retain=True)

    async def _person_state(self, person_id: str, person: PersonState) -> None:
        await self._publish(self.person_topic(person_id, "attributes"), self.person_attributes(person_id, person),
                            retain=True)

    async def _face(self, event: FaceEvent) -> None:
        if self.config.publish_face_crops and event.crop_jpeg:
            await self._publish(self.camera_topic(event.camera, "face"), event.crop_jpeg)  # not retained: privacy

    async def _unknown_off(self, camera: str) -> None:
        cam = self.cameras[camera]
        if cam.unknown_tracks:
            return  # another stranger arrived meanwhile
        cam.unknown, cam.off_timer = False, None
        await self._publish(self.camera_topic(camera, "unknown_person"), "OFF", retain=True)

    def _away_later(self, person_id: str, person: PersonState) -> None:
        person.away_timer = asyncio.get_running_loop().call_later(
            self.config.away_after_s, self._spawn, lambda: self._away(person_id))

    async def _away(self, person_id: str) -> None:
        person = self.persons.get(person_id)
        if person is None or person.live_tracks:
            return
        await self._leave(person_id, person)

    async def _leave(self, person_id: str, person: PersonState) -> None:
        person.home, person.away_timer = False, None
        person.live_tracks.clear()
        await self._person_state(person_id, person)

    def _camera(self, camera: str) -> tuple[CameraState, bool]:
        if camera in self.cameras:
            return self.cameras[camera], False
        self.cameras[camera] = CameraState()
        return self.cameras[camera], True

    @staticmethod
    def _json(payload: Any) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    async def _publish(self, topic: str, payload: Any, retain: bool = False) -> None:
        assert self.mqtt is not None
        data = payload if isinstance(payload, bytes) else payload.encode() if isinstance(payload, str) \
            else self._json(payload)
        await self.mqtt.publish(topic, data, retain=retain, timeout=2.0)

    async def _send(self, sends: list[Coroutine[Any, Any, None]]) -> None:
        """Run the publishes in order; offline, the state stays here and goes out on reconnect."""
        for i, send in enumerate(sends):
            try:
                await send
            except MqttUnavailable as e:
                log.debug("ha_publish_deferred", error=str(e))
                for rest in sends[i + 1:]:  # never started: close them so nothing warns
                    rest.close()
                return

    def _spawn(self, make: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await make()
            except MqttUnavailable as e:
                log.debug("ha_publish_deferred", error=str(e))
            except Exception:
                log.exception("ha_task_failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
