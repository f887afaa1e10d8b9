"""Home Assistant through MQTT discovery.

One HA device per camera: sensor "Last recognised person", binary_sensor "Unknown person present" (on
while a face without a name is in view, off `unknown_off_after_s` after it left), event "Person
recognised", and, opt-in, image "Last face". And one device_tracker per named person
(home while seen, not_home `away_after_s` after their last track ended; last camera as attribute) on
a device for this facewatchd thing. Discovery configs and states are retained; availability is
announced `online` on connect with a last will of `offline`. Everything is re-published on every
(re)connect and whenever HA's birth message (`<discovery_prefix>/status` = `online`) arrives, and a
forgotten person's entity is removed with an empty retained config.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Coroutine

import structlog
from pydantic import Field

from facewatchd import __version__
from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginContext
from plugins._mqtt import BrokerConfig, MqttUnavailable, PluginMqtt

log = structlog.get_logger("facewatchd.plugins.homeassistant")

TOPIC_PART = r"^[^#+\s]+$"
ORIGIN = {"name": "facewatchd", "sw_version": __version__}


class HomeAssistantConfig(BrokerConfig):
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PART, description="HA's discovery prefix")
    base_topic: str = Field("facewatchd", pattern=TOPIC_PART, description="state topics: <base>/<thing>/…")
    unknown_off_after_s: float = Field(30.0, ge=0, description="'unknown person present' turns off this long "
                                       "after the last unknown face's track ended")
    away_after_s: float = Field(300.0, ge=0, description="a person is not_home this long after last seen")
    publish_face_crops: bool = Field(False, description="image entity with the last face crop (privacy: opt-in)")
    person_entities: bool = Field(True, description="one device_tracker per named person")


def slug(text: str) -> str:
    """An HA object id / node id: [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


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
    unknown: bool = False
    unknown_tracks: set[str] = field(default_factory=set)  # live tracks of people without a name
    off_timer: asyncio.TimerHandle | None = None


class Plugin:
    def __init__(self) -> None:
        self.config = HomeAssistantConfig()
        self.thing = ""
        self.mqtt: PluginMqtt | None = None
        self.cameras: dict[str, CameraState] = {}
        self.persons: dict[str, PersonState] = {}
        self.removals: set[str] = set()  # forgotten persons whose entities the broker has not been told of
        self._announced: set[tuple[str, str, str]] = set()  # (camera, track, name) already published
        self._tasks: set[asyncio.Task[None]] = set()

    # -- topics ---------------------------------------------------------------------------------
    @property
    def node(self) -> str:
        return slug(f"facewatchd_{self.thing}")

    @property
    def base(self) -> str:
        return f"{self.config.base_topic}/{self.thing}"

    @property
    def availability_topic(self) -> str:
        return f"{self.base}/homeassistant/availability"

    def camera_topic(self, camera: str, what: str) -> str:
        return f"{self.base}/{slug(camera)}/{what}"

    def person_topic(self, person_id: str, what: str) -> str:
        return f"{self.base}/persons/{slug(person_id)}/{what}"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.config.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    # -- discovery payloads ---------------------------------------------------------------------
    def hub_device(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": f"facewatchd {self.thing}", "model": "facewatchd",
                "manufacturer": "facewatchd", "sw_version": __version__}

    def camera_device(self, camera: str) -> dict[str, Any]:
        return {"identifiers": [f"{self.node}_{slug(camera)}"], "name": f"{camera} camera",
                "model": "facewatchd camera", "manufacturer": "facewatchd", "sw_version": __version__,
                "via_device": self.node}

    def _entity(self, unique_id: str, name: str, device: dict[str, Any], **keys: Any) -> dict[str, Any]:
        return {"name": name, "unique_id": unique_id, "availability_topic": self.availability_topic,
                "device": device, "origin": ORIGIN, **keys}

    def camera_configs(self, camera: str) -> dict[str, dict[str, Any] | None]:
        """config topic → payload (None: remove the entity) for one camera's entities."""
        dev, cid = self.camera_device(camera), f"{self.node}_{slug(camera)}"
        configs: dict[str, dict[str, Any] | None] = {
            self.config_topic("sensor", f"{slug(camera)}_last_person"): self._entity(
                f"{cid}_last_person", "Last recognised person", dev, icon="mdi:account-check",
                state_topic=self.camera_topic(camera, "last_person"),
                json_attributes_topic=self.camera_topic(camera, "last_person/attributes")),
            self.config_topic("binary_sensor", f"{slug(camera)}_unknown_person"): self._entity(
                f"{cid}_unknown_person", "Unknown person present", dev, device_class="occupancy",
                state_topic=self.camera_topic(camera, "unknown_person"), payload_on="ON", payload_off="OFF"),
            self.config_topic("event", f"{slug(camera)}_person_recognised"): self._entity(
                f"{cid}_person_recognised", "Person recognised", dev, icon="mdi:account-arrow-right",
                state_topic=self.camera_topic(camera, "recognised"), event_types=["recognised"]),
        }
        image_topic = self.config_topic("image", f"{slug(camera)}_last_face")
        configs[image_topic] = self._entity(f"{cid}_last_face", "Last face", dev, content_type="image/jpeg",
                                            image_topic=self.camera_topic(camera, "face")) \
            if self.config.publish_face_crops else None  # turned off: remove an entity an earlier run made
        return configs

    def person_config(self, person_id: str, person: PersonState) -> dict[str, Any]:
        return self._entity(f"{self.node}_person_{slug(person_id)}", person.name, self.hub_device(),
                            icon="mdi:account", source_type="router",
                            state_topic=self.person_topic(person_id, "presence"),
                            json_attributes_topic=self.person_topic(person_id, "attributes"),
                            payload_home="home", payload_not_home="not_home")

    def person_config_topic(self, person_id: str) -> str:
        return self.config_topic("device_tracker", f"person_{slug(person_id)}")

    def person_attributes(self, person_id: str, person: PersonState) -> dict[str, Any]:
        return {"person_id": person_id, "last_camera": person.last_camera,
                "last_seen": iso(person.last_seen) if person.last_seen else None,
                "in_zones": ["home"] if person.home else []}  # HA ≥ 2026 reads presence from in_zones

    # -- hooks ----------------------------------------------------------------------------------
    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[HomeAssistantConfig]]:
        return "homeassistant", HomeAssistantConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("homeassistant")
        self.thing = context.config.device.thing
        self.cameras = {c.id: CameraState() for c in context.config.cameras}
        self.mqtt = PluginMqtt(self.config, f"facewatchd-{self.thing}-homeassistant",
                               will=(self.availability_topic, b"offline"),
                               subscriptions=(f"{self.config.discovery_prefix}/status",),
                               on_connect=self.announce, on_message=self._on_message)
        self.mqtt.start()

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        for cam in self.cameras.values():
            if cam.off_timer:
                cam.off_timer.cancel()
        for person in self.persons.values():
            if person.away_timer:
                person.away_timer.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        if self.mqtt is not None:
            await self.mqtt.stop(last=(self.availability_topic, b"offline"))

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        if not event.name:
            return  # an unlabelled person: the unknown_face hook covers it
        key = (event.camera, event.track_id, event.name)
        if key in self._announced:
            return  # a repeat as more frames agree: HA already has it
        self._announced.add(key)
        now = time.time()
        cam, new_camera = self._camera(event.camera)
        cam.last_name = event.name
        cam.last_attributes = {"person_id": event.person_id, "similarity": round(event.similarity, 3),
                               "source": event.source, "track_id": event.track_id, "seen_at": iso(now)}
        person, new_person, renamed = None, False, False
        if self.config.person_entities and event.person_id:
            person = self.persons.get(event.person_id)
            new_person = person is None
            if person is None:
                person = self.persons[event.person_id] = PersonState(event.name)
            renamed, person.name = person.name != event.name, event.name
            person.home, person.last_camera, person.last_seen = True, event.camera, now
            person.live_tracks.add(f"{event.camera}/{event.track_id}")
            if person.away_timer:
                person.away_timer.cancel()
                person.away_timer = None
        payload = {"event_type": "recognised", "person": event.name, "person_id": event.person_id,
                   "similarity": round(event.similarity, 3), "track_id": event.track_id, "source": event.source}
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        sends += [self._camera_state(event.camera),
                  self._publish(self.camera_topic(event.camera, "recognised"), payload),
                  self._face(event)]
        if person is not None and event.person_id:
            if new_person or renamed:
                sends.append(self._publish(self.person_config_topic(event.person_id),
                                           self.person_config(event.person_id, person), retain=True))
            sends.append(self._person_state(event.person_id, person))
        await self._send(sends)

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        cam, new_camera = self._camera(event.camera)
        cam.unknown = True
        cam.unknown_tracks.add(event.track_id)
        if cam.off_timer:
            cam.off_timer.cancel()
            cam.off_timer = None
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        await self._send(sends + [self._publish(self.camera_topic(event.camera, "unknown_person"), "ON", retain=True),
                                  self._face(event)])

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        face = event.face
        self._announced = {k for k in self._announced if k[:2] != (face.camera, face.track_id)}
        cam = self.cameras.get(face.camera)
        if cam is not None and face.track_id in cam.unknown_tracks:
            cam.unknown_tracks.discard(face.track_id)
            if not cam.unknown_tracks:  # the last stranger left: off after the configured delay
                cam.off_timer = asyncio.get_running_loop().call_later(
                    self.config.unknown_off_after_s, self._spawn, lambda: self._unknown_off(face.camera))
        person = self.persons.get(face.person_id or "")
        if person is None:
            return
        person.live_tracks.discard(f"{face.camera}/{face.track_id}")
        if not person.live_tracks and person.home and person.away_timer is None:
            person.away_timer = asyncio.get_running_loop().call_later(
                self.config.away_after_s, self._spawn, lambda: self._away(face.person_id or ""))

    @hookimpl
    async def person_labelled(self, person_id: str, name: str | None, previous: str | None) -> None:
        shown_on = [c for c, cam in self.cameras.items() if cam.last_attributes.get("person_id") == person_id]
        sends = []
        if name is None:  # forgotten: remove the entity, its retained states, and the name from the cameras
            person = self.persons.pop(person_id, None)
            if person and person.away_timer:
                person.away_timer.cancel()
            # kept until the broker has it: a forget that arrives before we connect (or while the broker is
            # away) is sent at the next connect, never dropped
            self.removals.add(person_id)
            sends.append(self._remove_person(person_id))
            for camera in shown_on:
                self.cameras[camera].last_name, self.cameras[camera].last_attributes = None, {}
        else:  # named or renamed: the entity (new, or with its new name) and the cameras that show them
            for camera in shown_on:
                self.cameras[camera].last_name = name
            if self.config.person_entities:
                person = self.persons.setdefault(person_id, PersonState(name))
                person.name = name
                sends += [self._publish(self.person_config_topic(person_id), self.person_config(person_id, person),
                                        retain=True),
                          self._person_state(person_id, person)]
        await self._send(sends + [self._camera_state(camera) for camera in shown_on])

    # -- publishing -----------------------------------------------------------------------------
    async def _remove_person(self, person_id: str) -> None:
        for topic in (self.person_config_topic(person_id), self.person_topic(person_id, "presence"),
                      self.person_topic(person_id, "attributes")):
            await self._publish(topic, b"", retain=True)
        self.removals.discard(person_id)

    async def announce(self) -> None:
        """Removals still owed, availability, every discovery config, then every state: on connect and
        on HA's birth message."""
        assert self.mqtt is not None
        for person_id in list(self.removals):
            await self._remove_person(person_id)
        await self.mqtt.publish(self.availability_topic, "online", retain=True)
        for camera in list(self.cameras):
            await self._camera_discovery(camera)
        for person_id, person in list(self.persons.items()):
            await self.mqtt.publish(self.person_config_topic(person_id), self._json(self.person_config(person_id,
                                                                                                       person)),
                                    retain=True)
        for camera in list(self.cameras):
            await self._camera_state(camera)
        for person_id, person in list(self.persons.items()):
            await self._person_state(person_id, person)
        log.info("ha_discovery_published", cameras=len(self.cameras), persons=len(self.persons))

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.config.discovery_prefix}/status" and payload.strip() == b"online":
            log.info("ha_birth_seen", republishing=True)
            self._spawn(self.announce)  # not inside the message loop: it publishes a lot

    async def _camera_discovery(self, camera: str) -> None:
        for topic, payload in self.camera_configs(camera).items():
            await self._publish(topic, payload if payload is not None else b"", retain=True)

    async def _camera_state(self, camera: str) -> None:
        cam = self.cameras[camera]
        await self._publish(self.camera_topic(camera, "last_person"), cam.last_name or "None", retain=True)
        await self._publish(self.camera_topic(camera, "last_person/attributes"), cam.last_attributes, retain=True)
        await self._publish(self.camera_topic(camera, "unknown_person"), "ON" if cam.unknown else "OFF", retain=True)

    async def _person_state(self, person_id: str, person: PersonState) -> None:
        await self._publish(self.person_topic(person_id, "presence"), "home" if person.home else "not_home",
                            retain=True)
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

    async def _away(self, person_id: str) -> None:
        person = self.persons.get(person_id)
        if person is None or person.live_tracks:
            return
        person.home, person.away_timer = False, None
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
