"""Reconcile with the broker at every connect: announce what this run has, read back the retained
discovery configs and states under our node, and remove what this run no longer has."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from facewatchd.link.base import availability_topic
from plugins.homeassistant.discovery import slug
from plugins.homeassistant.state import EntityStates, PersonState

log = structlog.get_logger("facewatchd.plugins.homeassistant")

STATE_KEYS = ("state_topic", "json_attributes_topic", "image_topic")  # a removed entity's retained states


def parse_iso(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None


@dataclass
class Reconcile:
    """What the broker holds under our node, read back after a connect until our own marker arrives."""

    token: str
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # person slug → retained attributes
    last_person: dict[str, dict[str, Any]] = field(default_factory=dict)  # camera slug → retained attributes


class Reconciling(EntityStates):
    """Announce at every (re)connect and HA birth message, then reconcile with what the broker holds."""

    forgotten: set[str]
    _reconcile: Reconcile | None

    def wanted_configs(self) -> dict[str, dict[str, Any] | None]:
        """Every discovery config this run stands for (None: one it removes)."""
        wanted = self.hub_configs()
        for camera in self.cameras:
            wanted |= self.camera_configs(camera)
        for person_id, person in self.persons.items():
            wanted |= self.person_configs(person_id, person.name)
        return wanted

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
