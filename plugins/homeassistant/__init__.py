"""Home Assistant through MQTT discovery.

A hub device for this facewatchd thing with a "Resolver link" connectivity sensor (so the hub always
exists, and the cameras' `via_device` finds it), and one device per named person, named as the person,
with a device_tracker (home while seen, not_home `away_after_s` after their last track ended; last camera
as attribute) and a "Last camera" sensor. One HA device
per camera: sensors "Last recognised person" and "People in view", binary_sensor "Unknown person
present" (on while a face without a name is in view, off `unknown_off_after_s` after it left), event
"Face" (`recognised` or `unknown`, once per track, also when the resolver answers after the track
ended), and, opt-in, image "Last face". Discovery configs and states are retained; availability is
announced `online` on connect with a last will of `offline`, and a camera's entities are also unavailable
while the camera delivers no frames (camera_status).

At every (re)connect and HA birth message (`<discovery_prefix>/status` = `online`) the plugin
reconciles: it publishes its current cameras and persons, then reads back the retained discovery
configs under its node and removes those it no longer has (a camera taken out of the config, an
option turned off, a person forgotten while away), and sets every person it did not see in this run
to not_home, so nobody stays home across a restart.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Coroutine

import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd import __version__
from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.link.base import availability_topic
from facewatchd.plugins import PluginContext
from plugins._mqtt import BrokerConfig, MqttUnavailable, PluginMqtt

log = structlog.get_logger("facewatchd.plugins.homeassistant")

TOPIC_PART = r"^[^#+\s]+$"
ORIGIN = {"name": "facewatchd", "sw_version": __version__}
ENDED_KEPT = 1024  # ended tracks remembered, so an answer that arrives after its track ended is recognised as late
# the empty message that clears a retained state (a forget, a removal) may reach the entity before its removal
# does: no attributes, rather than a warning about JSON in HA's log
NO_ATTRIBUTES_WHEN_EMPTY = "{{ value if value else '{}' }}"
STATE_KEYS = ("state_topic", "json_attributes_topic", "image_topic")  # a removed entity's retained states


class CameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, description="the device's name in HA; default from the id")
    area: str | None = Field(None, min_length=1, description="HA's suggested_area; default: the camera's name")


class HomeAssistantConfig(BrokerConfig):
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PART, description="HA's discovery prefix")
    base_topic: str = Field("facewatchd", pattern=TOPIC_PART, description="state topics: <base>/<thing>/…")
    unknown_off_after_s: float = Field(30.0, ge=0, description="'unknown person present' turns off this long "
                                       "after the last unknown face's track ended")
    away_after_s: float = Field(300.0, ge=0, description="a person is not_home this long after last seen")
    publish_face_crops: bool = Field(False, description="image entity with the last face crop (privacy: opt-in)")
    person_entities: bool = Field(True, description="one device_tracker per named person")
    configuration_url: str | None = Field(None, description="the hub's link in HA; default: the review page, "
                                          "when [web] is enabled")
    cameras: dict[str, CameraOptions] = Field(default_factory=dict, description="camera id → name, area")


def slug(text: str) -> str:
    """An HA object id / node id: [A-Za-z0-9_-] only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def friendly(camera_id: str) -> str:
    """`front_door` → `Front door`: what HA shows when the config gives no name."""
    words = re.sub(r"[_.-]+", " ", camera_id).strip()
    return words[:1].upper() + words[1:] if words else camera_id


def json_value(key: str, otherwise: str) -> str:
    """An HA template for one key of a JSON state message; the empty message that clears it (a forget) has none."""
    return f"{{{{ value_json.{key} if value_json is defined and value_json.{key} else '{otherwise}' }}}}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def parse_iso(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None


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


@dataclass
class Reconcile:
    """What the broker holds under our node, read back after a connect until our own marker arrives."""

    token: str
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # person slug → retained attributes
    last_person: dict[str, dict[str, Any]] = field(default_factory=dict)  # camera slug → retained attributes


class Plugin:
    def __init__(self) -> None:
        self.config = HomeAssistantConfig()
        self.thing = ""
        self.configuration_url: str | None = None
        self.mqtt: PluginMqtt | None = None
        self.cameras: dict[str, CameraState] = {}
        self.persons: dict[str, PersonState] = {}
        self.removals: set[str] = set()  # forgotten persons whose entities the broker has not been told of
        self.forgotten: set[str] = set()  # every person forgotten in this run: a camera still showing one is cleared
        self.link_online: bool | None = None
        # (camera, track) whose event went out → which: an unknown face may still be recognised in its track
        self._announced: dict[tuple[str, str], str] = {}
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()  # (camera, track) that ended
        self._reconcile: Reconcile | None = None
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

    @property
    def sync_topic(self) -> str:
        return f"{self.base}/homeassistant/sync"

    def camera_topic(self, camera: str, what: str) -> str:
        return f"{self.base}/{slug(camera)}/{what}"

    def person_topic(self, person_id: str, what: str) -> str:
        return f"{self.base}/persons/{slug(person_id)}/{what}"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.config.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    # -- discovery payloads ---------------------------------------------------------------------
    def hub_device(self) -> dict[str, Any]:
        device = {"identifiers": [self.node], "name": f"facewatchd {self.thing}", "model": "facewatchd",
                  "manufacturer": "facewatchd", "sw_version": __version__}
        return device | ({"configuration_url": self.configuration_url} if self.configuration_url else {})

    def camera_device(self, camera: str) -> dict[str, Any]:
        options = self.config.cameras.get(camera, CameraOptions())
        name = options.name or friendly(camera)
        return {"identifiers": [f"{self.node}_{slug(camera)}"], "name": name, "model": "facewatchd camera",
                "manufacturer": "facewatchd", "sw_version": __version__, "via_device": self.node,
                "suggested_area": options.area or name}

    @property
    def availability(self) -> list[dict[str, str]]:
        """This plugin's own availability and its connection's will (a dead connection cannot say the
        first): an entity is available while both are online."""
        return [{"topic": self.availability_topic}, {"topic": availability_topic(self.thing)}]

    def _entity(self, unique_id: str, name: str | None, device: dict[str, Any], **keys: Any) -> dict[str, Any]:
        return {"name": name, "unique_id": unique_id, "availability": self.availability, "availability_mode": "all",
                "device": device, "origin": ORIGIN, **keys}

    def hub_configs(self) -> dict[str, dict[str, Any] | None]:
        # Not only device_trackers on the hub: HA 2024.3 deletes, at each start, a device that has nothing
        # else, and a camera's via_device needs the hub to exist before the camera does.
        return {self.config_topic("binary_sensor", "resolver_link"): self._entity(
            f"{self.node}_resolver_link", "Resolver link", self.hub_device(), device_class="connectivity",
            entity_category="diagnostic", state_topic=f"{self.base}/link", payload_on="ON", payload_off="OFF")}

    def camera_configs(self, camera: str) -> dict[str, dict[str, Any] | None]:
        """config topic → payload (None: remove the entity) for one camera's entities."""
        dev, cid = self.camera_device(camera), f"{self.node}_{slug(camera)}"
        configs: dict[str, dict[str, Any] | None] = {
            self.config_topic("sensor", f"{slug(camera)}_last_person"): self._entity(
                f"{cid}_last_person", "Last recognised person", dev, icon="mdi:account-check",
                state_topic=self.camera_topic(camera, "last_person"),
                # nobody (yet, or forgotten) is an empty message: HA's unknown, never the text 'None'
                value_template="{{ value if value else 'unknown' }}",
                json_attributes_topic=self.camera_topic(camera, "last_person/attributes"),
                json_attributes_template=NO_ATTRIBUTES_WHEN_EMPTY),
            self.config_topic("sensor", f"{slug(camera)}_people"): self._entity(
                f"{cid}_people", "People in view", dev, icon="mdi:account-group", state_class="measurement",
                state_topic=self.camera_topic(camera, "people")),
            self.config_topic("binary_sensor", f"{slug(camera)}_unknown_person"): self._entity(
                f"{cid}_unknown_person", "Unknown person present", dev, device_class="occupancy",
                state_topic=self.camera_topic(camera, "unknown_person"), payload_on="ON", payload_off="OFF"),
            self.config_topic("event", f"{slug(camera)}_person_recognised"): self._entity(
                f"{cid}_person_recognised", "Face", dev, icon="mdi:account-arrow-right",
                state_topic=self.camera_topic(camera, "recognised"),
                event_types=["recognised", "unknown", "presentation_attack"]),
        }
        image_topic = self.config_topic("image", f"{slug(camera)}_last_face")
        configs[image_topic] = self._entity(f"{cid}_last_face", "Last face", dev, content_type="image/jpeg",
                                            image_topic=self.camera_topic(camera, "face")) \
            if self.config.publish_face_crops else None  # turned off: remove an entity an earlier run made
        # available while the daemon is and the camera delivers frames (a live source being reopened is not)
        availability = [*self.availability, {"topic": self.camera_topic(camera, "availability")}]
        for payload in configs.values():
            if payload is not None:
                payload["availability"] = availability
        return configs

    def person_device(self, person_id: str, person: PersonState) -> dict[str, Any]:
        return {"identifiers": [f"{self.node}_person_{slug(person_id)}"], "name": person.name,
                "model": "facewatchd person", "manufacturer": "facewatchd", "sw_version": __version__,
                "via_device": self.node}

    def person_config_topics(self, person_id: str) -> tuple[str, str]:
        """(device_tracker, sensor "Last camera") config topics of one person."""
        return (self.config_topic("device_tracker", f"person_{slug(person_id)}"),
                self.config_topic("sensor", f"person_{slug(person_id)}_camera"))

    def person_configs(self, person_id: str, person: PersonState) -> dict[str, dict[str, Any]]:
        # Each person is a device of their own, so HA names the tracker as the person ("Alice", the device's
        # name: the entity has none), not "facewatchd door-1 Alice"; the device has a sensor too, as HA 2024.3
        # deletes at start a device with nothing but trackers. State and attributes come in one JSON message:
        # HA writes the tracker once per update, not twice.
        topic, uid = self.person_topic(person_id, "attributes"), f"{self.node}_person_{slug(person_id)}"
        device = self.person_device(person_id, person)
        tracker, camera = self.person_config_topics(person_id)
        return {tracker: self._entity(uid, None, device, icon="mdi:account", source_type="router", state_topic=topic,
                                      value_template=json_value("presence", "not_home"), json_attributes_topic=topic,
                                      json_attributes_template=NO_ATTRIBUTES_WHEN_EMPTY,
                                      payload_home="home", payload_not_home="not_home"),
                camera: self._entity(f"{uid}_camera", "Last camera", device, icon="mdi:cctv", state_topic=topic,
                                     value_template=json_value("camera_name", "unknown"))}

    def person_attributes(self, person_id: str, person: PersonState) -> dict[str, Any]:
        return {"presence": "home" if person.home else "not_home", "person_id": person_id,
                "last_camera": person.last_camera,
                "camera_name": self._camera_name(person.last_camera) if person.last_camera else None,
                "last_seen": iso(person.last_seen) if person.last_seen else None,
                "in_zones": ["home"] if person.home else []}  # HA ≥ 2026 reads presence from in_zones

    def wanted_configs(self) -> dict[str, dict[str, Any] | None]:
        """Every discovery config this run stands for (None: one it removes)."""
        wanted = self.hub_configs()
        for camera in self.cameras:
            wanted |= self.camera_configs(camera)
        for person_id, person in self.persons.items():
            wanted |= self.person_configs(person_id, person)
        return wanted

    # -- hooks ----------------------------------------------------------------------------------
    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[HomeAssistantConfig]]:
        return "homeassistant", HomeAssistantConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("homeassistant")
        self.thing = context.config.device.thing
        web = context.config.web
        self.configuration_url = self.config.configuration_url or (
            f"{'https' if web.tls_cert_file else 'http'}://{web.host}:{web.port}/" if web.enabled else None)
        self.cameras = {c.id: CameraState() for c in context.config.cameras}
        self.mqtt = PluginMqtt(self.config, f"facewatchd-{self.thing}-homeassistant", context.mqtt,
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
    async def link_status(self, online: bool, link: str) -> None:
        self.link_online = online
        await self._send([self._link_state()])

    @hookimpl
    async def camera_status(self, camera: str, online: bool, reason: str) -> None:
        cam, new_camera = self._camera(camera)
        cam.online = online
        sends = [self._camera_discovery(camera)] if new_camera else []
        await self._send(sends + [self._camera_online(camera)])

    @hookimpl
    async def face_detected(self, event: FaceEvent) -> None:
        cam, new_camera = self._camera(event.camera)
        cam.live_tracks.add(event.track_id)
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        await self._send(sends + [self._people(event.camera)])

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        if not event.name:
            return  # an unlabelled person: the unknown_face hook covers it
        key = (event.camera, event.track_id)
        if self._announced.get(key) == "recognised":
            return  # a repeat as more frames agree, or the same track after a rename: no new sighting
        ended = key in self._ended  # the answer came after the track ended (a slow resolver, a short visit)
        if not ended:  # (an ended track has no more events: nothing to remember, nothing to forget later)
            self._announced[key] = "recognised"
        now = time.time()
        cam, new_camera = self._camera(event.camera)
        cam.last_name, cam.last_known = event.name, True
        if event.track_id in cam.unknown_tracks:  # first unknown (a face not worth naming yet), now recognised
            cam.unknown_tracks.discard(event.track_id)
            cam.unknown = bool(cam.unknown_tracks)  # the camera's state below says so
        cam.last_attributes = {"person": event.name, "person_id": event.person_id, "similarity": round(event.similarity, 3),
                               "source": event.source, "track_id": event.track_id, "seen_at": iso(now)}
        person, new_person, renamed = None, False, False
        if self.config.person_entities and event.person_id:
            person = self.persons.get(event.person_id)
            new_person = person is None
            if person is None:
                person = self.persons[event.person_id] = PersonState(event.name)
            renamed, person.name = person.name != event.name, event.name
            person.home, person.last_camera, person.last_seen = True, event.camera, now
            if person.away_timer:
                person.away_timer.cancel()
                person.away_timer = None
            if not ended:
                person.live_tracks.add(f"{event.camera}/{event.track_id}")
            elif not person.live_tracks:  # already gone again: away after the usual delay
                self._away_later(event.person_id, person)
        payload = {"event_type": "recognised", "person": event.name, "person_id": event.person_id,
                   "similarity": round(event.similarity, 3), "track_id": event.track_id, "source": event.source,
                   "camera": self._camera_name(event.camera), "late": ended}
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        sends += [self._camera_state(event.camera),
                  self._publish(self.camera_topic(event.camera, "recognised"), payload),
                  self._face(event)]
        if person is not None and event.person_id:
            if new_person or renamed:
                sends.append(self._person_discovery(event.person_id, person))
            sends.append(self._person_state(event.person_id, person))
        await self._send(sends)

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        key = (event.camera, event.track_id)
        if key in self._announced:
            return  # a re-verification of the same stranger
        ended = key in self._ended
        if not ended:
            self._announced[key] = "unknown"
        cam, new_camera = self._camera(event.camera)
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        if not ended:  # present only while in view; a late answer is an event, not a presence
            cam.unknown = True
            cam.unknown_tracks.add(event.track_id)
            if cam.off_timer:
                cam.off_timer.cancel()
                cam.off_timer = None
            sends.append(self._publish(self.camera_topic(event.camera, "unknown_person"), "ON", retain=True))
        payload = {"event_type": "unknown", "person_id": event.person_id, "track_id": event.track_id,
                   "source": event.source, "camera": self._camera_name(event.camera), "late": ended}
        await self._send(sends + [self._publish(self.camera_topic(event.camera, "recognised"), payload),
                                  self._face(event)])

    @hookimpl
    async def presentation_attack(self, event: FaceEvent, detail: str) -> None:
        """A photo or a screen held up to a door: an event on the camera's Face entity, for automations."""
        cam, new_camera = self._camera(event.camera)
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        payload = {"event_type": "presentation_attack", "person": event.name, "person_id": event.person_id,
                   "track_id": event.track_id, "camera": self._camera_name(event.camera), "detail": detail}
        await self._send(sends + [self._publish(self.camera_topic(event.camera, "recognised"), payload)])

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        face = event.face
        key = (face.camera, face.track_id)
        self._announced.pop(key, None)
        self._ended[key] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        cam = self.cameras.get(face.camera)
        sends = []
        if cam is not None:
            if face.track_id in cam.live_tracks:
                cam.live_tracks.discard(face.track_id)
                sends.append(self._people(face.camera))
            if face.track_id in cam.unknown_tracks:
                cam.unknown_tracks.discard(face.track_id)
                if not cam.unknown_tracks:  # the last stranger left: off after the configured delay
                    cam.off_timer = asyncio.get_running_loop().call_later(
                        self.config.unknown_off_after_s, self._spawn, lambda: self._unknown_off(face.camera))
        person = self.persons.get(face.person_id or "")
        if person is not None:
            person.live_tracks.discard(f"{face.camera}/{face.track_id}")
            if not person.live_tracks and person.home and person.away_timer is None:
                self._away_later(face.person_id or "", person)
        await self._send(sends)

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
            self.forgotten.add(person_id)
            sends.append(self._remove_person(person_id))
            for camera in shown_on:
                self.cameras[camera].last_name, self.cameras[camera].last_attributes = None, {}
                self.cameras[camera].last_known = True
        else:  # named or renamed: the entity (new, or with its new name) and the cameras that show them
            for camera in shown_on:
                self.cameras[camera].last_name = self.cameras[camera].last_attributes["person"] = name
            if self.config.person_entities:
                person = self.persons.setdefault(person_id, PersonState(name))
                person.name = name
                sends += [self._person_discovery(person_id, person), self._person_state(person_id, person)]
        await self._send(sends + [self._camera_state(camera) for camera in shown_on])

    # -- connect: announce and reconcile --------------------------------------------------------
    async def announce(self) -> None:
        """Removals still owed, availability, every discovery config (hub first: the cameras point to it),
        the states this run knows; then read back what the broker holds, to reconcile."""
        assert self.mqtt is not None
        for person_id in list(self.removals):
            await self._remove_person(person_id)
        await self.mqtt.publish(self.availability_topic, "online", retain=True)
        for topic, payload in self.wanted_configs().items():
            await self._publish(topic, payload if payload is not None else b"", retain=True)
        await self._link_state()
        for camera in list(self.cameras):
            await self._camera_online(camera)
            await self._camera_state(camera)
            await self._people(camera)
        for person_id, person in list(self.persons.items()):
            await self._person_state(person_id, person)
        # Retained messages come right after the subscription, before anything published later: our own
        # marker arriving means every retained config under our node has been seen.
        self._reconcile = Reconcile(secrets.token_hex(8))
        await self.mqtt.subscribe(*self._reconcile_topics())
        await self.mqtt.publish(self.sync_topic, self._reconcile.token)
        log.info("ha_discovery_published", cameras=len(self.cameras), persons=len(self.persons))

    def _reconcile_topics(self) -> tuple[str, ...]:
        return (f"{self.config.discovery_prefix}/+/{self.node}/+/config", f"{self.base}/persons/+/attributes",
                f"{self.base}/+/last_person/attributes",
                self.sync_topic)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == f"{self.config.discovery_prefix}/status":
            if payload.strip() == b"online":
                log.info("ha_birth_seen", republishing=True)
                self._spawn(self.announce)  # not inside the message loop: it publishes a lot
            return
        found = self._reconcile
        if found is None:
            return
        if topic == self.sync_topic:
            if payload.decode(errors="replace") == found.token:
                self._reconcile = None
                self._spawn(lambda: self._reconciled(found))
            return
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return
        if topic.endswith("/config"):
            found.configs[topic] = value
        elif topic.endswith("/last_person/attributes"):
            found.last_person[topic.split("/")[-3]] = value
        else:
            found.attributes[topic.split("/")[-2]] = value

    async def _reconciled(self, found: Reconcile) -> None:
        assert self.mqtt is not None
        await self.mqtt.subscribe(*self._reconcile_topics(), unsubscribe=True)
        tracker_prefix = self.config_topic("device_tracker", "person_").removesuffix("/config")
        for camera, cam in self.cameras.items():  # who each camera shows, from the last run: a forget clears it
            shown = found.last_person.get(slug(camera), {})
            if cam.last_known or not shown.get("person"):  # ("name" is an attribute HA drops)
                continue
            if shown.get("person_id") in self.forgotten:  # forgotten before we could see who the camera shows
                cam.last_known = True
                await self._camera_state(camera)
            else:
                cam.last_name, cam.last_attributes = str(shown["person"]), shown
        away = 0
        for topic, config in found.configs.items():  # persons from an earlier run: known, not seen since the start
            person_slug = topic.removeprefix(tracker_prefix).removesuffix("/config")
            attributes = found.attributes.get(person_slug, {})
            person_id = str(attributes.get("person_id") or person_slug)
            if not topic.startswith(tracker_prefix) or not self.config.person_entities or person_id in self.persons \
                    or person_id in self.forgotten:
                continue
            name = config.get("name") or (config.get("device") or {}).get("name") or person_id
            person = self.persons[person_id] = PersonState(str(name), last_camera=attributes.get("last_camera"),
                                                           last_seen=parse_iso(attributes.get("last_seen")))
            await self._person_discovery(person_id, person)
            await self._person_state(person_id, person)
            away += 1
        wanted = {t for t, payload in self.wanted_configs().items() if payload is not None}
        removed = 0
        for topic, config in found.configs.items():
            if topic in wanted:
                continue
            # gone from this run (a camera out of the config, an option off, a forgotten person): remove it
            await self._publish(topic, b"", retain=True)
            own = [config.get(key) for key in STATE_KEYS] + [a.get("topic") for a in config.get("availability") or []
                                                              if isinstance(a, dict)]
            for state in own:  # its retained states, and its own availability (never the daemon's or the connection's)
                if isinstance(state, str) and state.startswith(f"{self.base}/") and \
                        state not in (self.availability_topic, availability_topic(self.thing)):
                    await self._publish(state, b"", retain=True)
            removed += 1
        log.info("ha_reconciled", retained=len(found.configs), removed=removed, set_not_home=away)

    # -- publishing -----------------------------------------------------------------------------
    async def _remove_person(self, person_id: str) -> None:
        for topic in (*self.person_config_topics(person_id), self.person_topic(person_id, "presence"),
                      self.person_topic(person_id, "attributes")):
            await self._publish(topic, b"", retain=True)
        self.removals.discard(person_id)

    async def _person_discovery(self, person_id: str, person: PersonState) -> None:
        for topic, payload in self.person_configs(person_id, person).items():
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
        person.home, person.away_timer = False, None
        await self._person_state(person_id, person)

    def _camera(self, camera: str) -> tuple[CameraState, bool]:
        if camera in self.cameras:
            return self.cameras[camera], False
        self.cameras[camera] = CameraState()
        return self.cameras[camera], True

    def _camera_name(self, camera: str) -> str:
        return str(self.camera_device(camera)["name"])

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
