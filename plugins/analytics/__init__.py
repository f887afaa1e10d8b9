"""Footfall analytics: numbers, not faces. Every ended track is a visit; per camera and per hour the
plugin keeps visits, dwell time (sum and histogram) and, unless `anonymous`, unique, new and returning
persons, in SQLite on the device (`store.py`). Only aggregates leave it: `facewatchd stats` reads the
database, and with `[plugins.analytics.mqtt]` Home Assistant gets sensors per camera over MQTT discovery.

A visit counts in the hour it began. Its time is the camera's own for live cameras (wall clock) and the
time its track ended here for files (whose timestamps are positions in the file). A track shorter than
`min_dwell_s` is flicker, not a visit. Unique persons come from person ids (never names), stored only as
salted hashes; a track that ended before the resolver named it counts as a visit, not as a person.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.app.config import Config
from facewatchd.events import TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.link.base import availability_topic
from facewatchd.pipeline.camera import is_live
from facewatchd.plugins import PluginContext
from plugins._mqtt import BrokerConfig, MqttUnavailable, PluginMqtt
from plugins.analytics.store import AnalyticsStore, hour_of
from plugins.homeassistant import ORIGIN, TOPIC_PART, HomeAssistantConfig, slug
from plugins.homeassistant.discovery import camera_device, iso

log = structlog.get_logger("facewatchd.plugins.analytics")


class AnalyticsMqttConfig(BrokerConfig):
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PART, description="HA's discovery prefix")
    base_topic: str = Field("facewatchd", pattern=TOPIC_PART, description="states: <base>/<thing>/analytics/<camera>")
    interval_s: float = Field(60.0, gt=0, description="republish at least this often (hours and days roll over "
                              "without visits)")


class AnalyticsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    db: Path | None = Field(None, description="default <device.state_dir>/analytics.db")
    anonymous: bool = Field(False, description="keep no person ids at all, not even hashed: no unique, new or "
                            "returning counts")
    min_dwell_s: float = Field(1.0, ge=0, description="shorter tracks are flicker, not visits")
    mqtt: AnalyticsMqttConfig | None = Field(None, description="Home Assistant sensors per camera")


def db_path(config: Config, section: AnalyticsConfig) -> Path:
    return section.db or config.device.state_dir / "analytics.db"


def local_midnight(now: float) -> float:
    return datetime.fromtimestamp(now).astimezone().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class Sensor:
    key: str  # in the state JSON
    name: str
    icon: str
    identities: bool  # needs person ids: none when anonymous
    counted_since: str | None  # a count that restarts: the state JSON's key for when it last did


SENSORS = (
    Sensor("visits_this_hour", "Visits this hour", "mdi:walk", False, "hour_started"),
    Sensor("visits_today", "Visits today", "mdi:walk", False, "day_started"),
    Sensor("unique_today", "Unique visitors today", "mdi:account-multiple", True, "day_started"),
    Sensor("new_today", "New visitors today", "mdi:account-plus", True, "day_started"),
    Sensor("mean_dwell_today_s", "Mean dwell today", "mdi:timer-outline", False, None),
)


def sensor_keys(sensor: Sensor) -> dict[str, Any]:
    """A count since the hour or the day began is a `total` that restarts at `last_reset` (HA's statistics
    then add up visits across restarts exactly, even when a new hour starts with more than the last ended);
    the mean dwell is a measurement, in seconds."""
    if sensor.counted_since is None:
        return {"state_class": "measurement", "device_class": "duration", "unit_of_measurement": "s"}
    return {"state_class": "total", "last_reset_value_template": f"{{{{ value_json.{sensor.counted_since} }}}}"}


class Plugin:
    """Writes happen in `track_ended`, a plain hook: on this plugin's own thread, never on the loop."""

    def __init__(self) -> None:
        self.config = AnalyticsConfig()
        self.store: AnalyticsStore | None = None
        self.thing = ""
        self.homeassistant = HomeAssistantConfig()
        self.cameras: list[str] = []
        self.live: set[str] = set()  # cameras whose timestamps are wall clock
        self.mqtt: PluginMqtt | None = None
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False  # ends the publisher even if a cancellation is lost on the way

    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[AnalyticsConfig]]:
        return "analytics", AnalyticsConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("analytics")
        self.thing = context.config.device.thing
        # the camera devices' names and areas, as the homeassistant plugin gives them (its defaults without it)
        self.homeassistant = context.plugin_config("homeassistant") or HomeAssistantConfig()
        self.cameras = [c.id for c in context.config.cameras]
        self.live = {c.id for c in context.config.cameras if is_live(c.source)}
        self.store = await asyncio.to_thread(AnalyticsStore, db_path(context.config, self.config),
                                             self.config.anonymous)
        log.info("analytics_started", db=str(self.store.path), anonymous=self.config.anonymous)
        if self.config.mqtt is not None:
            self._loop, self._changed = asyncio.get_running_loop(), asyncio.Event()
            self.mqtt = PluginMqtt(self.config.mqtt, f"facewatchd-{self.thing}-analytics", context.mqtt,
                                   on_connect=self.announce)
            self.mqtt.start()
            self._publisher = asyncio.get_running_loop().create_task(self._publish_loop(), name="analytics-publish")

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        if self._publisher is not None:
            self._stopping = True
            if self._changed is not None:
                self._changed.set()
            self._publisher.cancel()
            # Bounded: offline is announced and the store closed even if the publisher is slow to end
            _, pending = await asyncio.wait({self._publisher}, timeout=3.0)
            if pending:
                log.warning("analytics_publisher_still_running")
        if self.mqtt is not None:
            try:  # the last numbers, so HA does not keep a stale count from before the last visits
                await self.publish_states()
            except MqttUnavailable as e:
                log.debug("analytics_publish_deferred", error=str(e))
            await self.mqtt.stop(last=(self.availability_topic, b"offline"))
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    @hookimpl
    def person_labelled(self, person_id: str, name: str | None, previous: str | None) -> None:
        if name is None and self.store is not None:  # forgotten: their pseudonymous history goes too
            self.store.forget(person_id)

    @hookimpl
    def track_ended(self, event: TrackEnded) -> None:
        if self.store is None or event.dwell_s < self.config.min_dwell_s:
            return
        face = event.face
        ended = face.ts if face.camera in self.live else time.time()
        self.store.record(face.camera, ended - event.dwell_s, event.dwell_s, face.person_id)
        if self._loop is not None and self._changed is not None:
            self._loop.call_soon_threadsafe(self._changed.set)

    # -- Home Assistant over MQTT ---------------------------------------------------------------
    @property
    def node(self) -> str:
        return slug(f"facewatchd_{self.thing}_footfall")

    @property
    def earlier_node(self) -> str:
        """Where the sensors were when each camera had a footfall device of its own, apart from the camera's."""
        return slug(f"facewatchd_{self.thing}_analytics")

    @property
    def availability_topic(self) -> str:
        assert self.config.mqtt is not None
        return f"{self.config.mqtt.base_topic}/{self.thing}/analytics/availability"

    def state_topic(self, camera: str) -> str:
        assert self.config.mqtt is not None
        return f"{self.config.mqtt.base_topic}/{self.thing}/analytics/{slug(camera)}"

    def discovery(self, camera: str) -> dict[str, dict[str, Any] | None]:
        """config topic → payload (None: remove it; the identity sensors when anonymous) for one camera."""
        assert self.config.mqtt is not None
        device = camera_device(self.homeassistant, self.thing, camera)  # the camera's own device in HA
        configs: dict[str, dict[str, Any] | None] = {}
        prefix = self.config.mqtt.discovery_prefix
        for sensor in SENSORS:
            # HA 2024.3 never moves an entity to another device: the earlier sensors go (their device with them)
            configs[f"{prefix}/sensor/{self.earlier_node}/{slug(camera)}_{sensor.key}/config"] = None
            topic = f"{prefix}/sensor/{self.node}/{slug(camera)}_{sensor.key}/config"
            configs[topic] = None if sensor.identities and self.config.anonymous else {
                "name": sensor.name, "unique_id": f"{self.node}_{slug(camera)}_{sensor.key}", "device": device,
                "origin": ORIGIN, "icon": sensor.icon,
                # its own availability and its connection's will (a dead connection cannot say the first)
                "availability": [{"topic": self.availability_topic}, {"topic": availability_topic(self.thing)}],
                "availability_mode": "all", "state_topic": self.state_topic(camera),
                "value_template": f"{{{{ value_json.{sensor.key} }}}}", **sensor_keys(sensor)}
        return configs

    def states(self, now: float) -> dict[str, dict[str, Any]]:
        """camera → its sensors' values (runs in a thread: it reads the database)."""
        assert self.store is not None
        out = {}
        hour_started, day_started = hour_of(now), local_midnight(now)
        for camera in self.cameras:
            hour, today = self.store.total(hour_started, camera), self.store.total(day_started, camera)
            out[camera] = {"visits_this_hour": hour.visits, "visits_today": today.visits,
                           "unique_today": today.unique, "new_today": today.new,
                           "mean_dwell_today_s": round(today.mean_dwell_s, 1),
                           "hour_started": iso(hour_started), "day_started": iso(day_started)}
        return out

    async def announce(self) -> None:
        assert self.mqtt is not None
        await self.mqtt.publish(self.availability_topic, "online", retain=True)
        for camera in self.cameras:
            for topic, payload in self.discovery(camera).items():
                await self.mqtt.publish(topic, json.dumps(payload) if payload else b"", retain=True)
        await self.publish_states()

    async def publish_states(self) -> None:
        assert self.mqtt is not None
        states = await asyncio.to_thread(self.states, time.time())
        for camera, state in states.items():
            await self.mqtt.publish(self.state_topic(camera), json.dumps(state), retain=True, timeout=2.0)

    async def _publish_loop(self) -> None:
        """After visits (at most once a second) and every `interval_s`; offline, the next connect announces."""
        assert self._changed is not None and self.config.mqtt is not None
        while not self._stopping:
            try:
                async with asyncio.timeout(self.config.mqtt.interval_s):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.publish_states()
            except MqttUnavailable as e:
                log.debug("analytics_publish_deferred", error=str(e))
            except Exception:  # a bug or a damaged database: logged, and tried again next time
                log.exception("analytics_publish_failed")
            await asyncio.sleep(1.0)
