"""Home Assistant through MQTT discovery.

A hub device for this facewatchd thing with a "Resolver link" connectivity sensor (so the hub always
exists, and the cameras' `via_device` finds it), and one device per named person, named as the person,
with a device_tracker (home while seen, not_home `away_after_s` after their last track ended; last camera
as attribute) and a "Last camera" sensor. One HA device
per camera: sensors "Last recognised person" and "People in view", binary_sensor "Unknown person
present" (on while a face without a name is in view, off `unknown_off_after_s` after it left), event
"Face" (`recognised` or `unknown`, once per track, also when the resolver answers after the track
ended), and, opt-in, image "Last face" (the analytics plugin puts its footfall sensors on the same device).
Discovery configs and states are retained; availability is announced `online` on connect with a last will
of `offline`, and a camera's entities are also unavailable while the camera delivers no frames
(camera_status). A clean stop sets every person not_home first: a tracker is available while the
connection is up or while it says not_home, so after the will (a dead daemon) only one that says home is
unavailable.

At every (re)connect and HA birth message (`<discovery_prefix>/status` = `online`) the plugin
reconciles: it publishes its current cameras and persons, then reads back the retained discovery
configs under its node and removes those it no longer has (a camera taken out of the config, an
option turned off, a person forgotten while away), and sets every person it did not see in this run
to not_home, so nobody stays home across a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginContext
from plugins._mqtt import PluginMqtt
from plugins.homeassistant.config import TOPIC_PART, CameraOptions, HomeAssistantConfig, review_page_url
from plugins.homeassistant.discovery import ORIGIN, iso, slug
from plugins.homeassistant.health import HealthSensors
from plugins.homeassistant.reconcile import Reconcile
from plugins.homeassistant.state import CameraState, PersonState

__all__ = ["ORIGIN", "TOPIC_PART", "CameraOptions", "HomeAssistantConfig", "Plugin", "slug"]

ENDED_KEPT = 1024  # ended tracks remembered, so an answer that arrives after its track ended is recognised as late


class Plugin(HealthSensors):  # HealthSensors (health.py): diagnostic sensors, over Reconciling
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

    # -- hooks ----------------------------------------------------------------------------------
    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[HomeAssistantConfig]]:
        return "homeassistant", HomeAssistantConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("homeassistant")
        self.thing = context.config.device.thing
        web = context.config.web
        self.configuration_url = self.config.configuration_url or (review_page_url(web) if web.enabled else None)
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
            # Nobody is seen by a stopped daemon: its persons are not_home (their trackers stay available),
            # before the daemon's own entities go unavailable.
            await self._send([self._leave(person_id, person) for person_id, person in self.persons.items()
                              if person.home])
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
                   "camera": self.camera_name(event.camera), "late": ended}
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
                   "source": event.source, "camera": self.camera_name(event.camera), "late": ended}
        await self._send(sends + [self._publish(self.camera_topic(event.camera, "recognised"), payload),
                                  self._face(event)])

    @hookimpl
    async def presentation_attack(self, event: FaceEvent, detail: str) -> None:
        """A photo or a screen held up to a door: an event on the camera's Face entity, for automations."""
        cam, new_camera = self._camera(event.camera)
        sends = [self._camera_discovery(event.camera)] if new_camera else []
        payload = {"event_type": "presentation_attack", "person": event.name, "person_id": event.person_id,
                   "track_id": event.track_id, "camera": self.camera_name(event.camera), "detail": detail}
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
