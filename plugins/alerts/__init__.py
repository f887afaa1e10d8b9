"""Alerts: tell someone of an unknown face, a listed person, a camera gone offline or one dropping frames.

Each alert is one JSON object, sent over every configured channel: a webhook (HTTP POST), an MQTT
message (kept while the broker is away and sent on reconnect), and a command that gets the JSON on
its standard input. Alerts are rate-limited per person (per camera for offline alerts) and sent in the
background, so a slow channel never delays the next one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime, timezone
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginContext
from plugins._mqtt import BrokerConfig, PluginMqtt

log = structlog.get_logger("facewatchd.plugins.alerts")


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", description="receives each alert as a JSON POST")
    headers: dict[str, str] = Field(default_factory=dict, description="e.g. an Authorization header")
    timeout_s: float = Field(5.0, gt=0, le=60)
    attempts: int = Field(2, ge=1, le=5, description="tries per alert (1 s apart)")


class MqttAlertConfig(BrokerConfig):
    topic: str | None = Field(None, pattern=r"^[^#+]+$", description="default facewatchd/<thing>/alerts")
    qos: Literal[0, 1, 2] = 1
    keep_offline: int = Field(100, ge=0, description="alerts kept while the broker is away")


class CommandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1, description="program and arguments; the alert JSON is on stdin")
    timeout_s: float = Field(10.0, gt=0, le=300)


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_unknown: bool = Field(True, description="alert on faces of people without a name")
    on_persons: list[str] = Field(default_factory=list, description="alert when one of these names is seen")
    on_camera_offline: bool = Field(True, description="alert when a live camera stops delivering")
    on_frame_drops: bool = Field(True, description="alert when a camera keeps dropping frames ([health] "
                                 "max_drop_rate and drop_intervals; rate-limited per camera)")
    on_presentation_attack: bool = Field(True, description="alert when a door refuses a photo or a screen held "
                                         "up as a face (rate-limited per camera)")
    rate_limit_s: float = Field(300.0, ge=0, description="at most one alert per person (or camera) this often")
    include_crop: bool = Field(False, description="add the face crop, base64 JPEG, to face alerts")
    webhook: WebhookConfig | None = None
    mqtt: MqttAlertConfig | None = None
    command: CommandConfig | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> "AlertsConfig":
        if not (self.webhook or self.mqtt or self.command):
            raise ValueError("configure at least one channel: webhook, mqtt or command")
        return self


class Plugin:
    def __init__(self) -> None:
        self.config: AlertsConfig | None = None
        self.thing = ""
        self.topic = ""
        self.mqtt: PluginMqtt | None = None
        self._session: Any = None
        self._last: dict[str, float] = {}  # rate-limit key → monotonic time of its last alert
        self._alerted_tracks: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[AlertsConfig]]:
        return "alerts", AlertsConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = config = context.plugin_config("alerts")
        self.thing = context.config.device.thing
        if config.webhook is not None:
            import aiohttp  # the `plugins` extra; only needed for webhooks

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.webhook.timeout_s),
                                                  headers=config.webhook.headers)
        if config.mqtt is not None:
            self.topic = config.mqtt.topic or f"facewatchd/{self.thing}/alerts"
            self.mqtt = PluginMqtt(config.mqtt, f"facewatchd-{self.thing}-alerts", context.mqtt,
                                   keep_offline=config.mqtt.keep_offline)
            self.mqtt.start()

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        if self._tasks:
            done, pending = await asyncio.wait(set(self._tasks), timeout=3)
            for task in pending:
                task.cancel()
                log.warning("alert_abandoned_at_stop")
        if self.mqtt is not None:
            await self.mqtt.stop()
        if self._session is not None:
            await self._session.close()

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        if self.config and self.config.on_unknown:
            self._face_alert("unknown_face", event)

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        if self.config and event.name and event.name.casefold() in {n.casefold() for n in self.config.on_persons}:
            self._face_alert("person", event)

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        self._alerted_tracks.discard((event.face.camera, event.face.track_id))

    @hookimpl
    async def door_status(self, door: str, locked: bool, failures: int, detail: str) -> None:
        if self.config is None:
            return
        if not locked and self._due(f"door:{door}"):  # rate-limited while the lock keeps failing
            self._send({"alert": "door_not_locked", "thing": self.thing, "door": door, "failures": failures,
                        "detail": detail, "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        elif locked:
            self._send({"alert": "door_locked_again", "thing": self.thing, "door": door, "failures": failures,
                        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    @hookimpl
    async def presentation_attack(self, event: FaceEvent, detail: str) -> None:
        if self.config is None or not self.config.on_presentation_attack or not self._due(f"attack:{event.camera}"):
            return
        alert: dict[str, Any] = {
            "alert": "presentation_attack", "thing": self.thing, "camera": event.camera, "track_id": event.track_id,
            "person_id": event.person_id, "name": event.name, "detail": detail,
            "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.config.include_crop and event.crop_jpeg:
            alert["crop_jpeg_b64"] = base64.b64encode(event.crop_jpeg).decode()
        self._send(alert)

    @hookimpl
    async def frame_drops(self, camera: str, dropping: bool, drop_rate: float, bound: float) -> None:
        if self.config and self.config.on_frame_drops and dropping and self._due(f"drops:{camera}"):
            self._send({"alert": "frames_dropped", "thing": self.thing, "camera": camera,
                        "drop_rate": round(drop_rate, 4), "bound": bound,
                        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    @hookimpl
    async def camera_status(self, camera: str, online: bool, reason: str) -> None:
        if self.config and self.config.on_camera_offline and not online and self._due(f"camera:{camera}"):
            self._send({"alert": "camera_offline", "thing": self.thing, "camera": camera, "reason": reason,
                        "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    # -- sending --------------------------------------------------------------------------------
    def _face_alert(self, kind: str, event: FaceEvent) -> None:
        track = (event.camera, event.track_id)
        if track in self._alerted_tracks:
            return  # a repeat for the same visit (more frames agree)
        self._alerted_tracks.add(track)
        if not self._due(f"person:{event.person_id or event.face_id or event.camera + '/' + event.track_id}"):
            return
        assert self.config is not None
        alert: dict[str, Any] = {
            "alert": kind, "thing": self.thing, "camera": event.camera, "track_id": event.track_id,
            "person_id": event.person_id, "name": event.name, "similarity": round(event.similarity, 4),
            "ts": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.config.include_crop and event.crop_jpeg:
            alert["crop_jpeg_b64"] = base64.b64encode(event.crop_jpeg).decode()
        self._send(alert)

    def _due(self, key: str) -> bool:
        assert self.config is not None
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.config.rate_limit_s:
            log.debug("alert_rate_limited", key=key)
            return False
        self._last[key] = now
        return True

    def _send(self, alert: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, alert: dict[str, Any]) -> None:
        assert self.config is not None
        body = json.dumps(alert, separators=(",", ":")).encode()
        channels = {}
        if self.config.webhook is not None:
            channels["webhook"] = self._webhook(self.config.webhook, body)
        if self.mqtt is not None:
            channels["mqtt"] = self.mqtt.publish(self.topic, body, qos=self.config.mqtt.qos if self.config.mqtt else 1)
        if self.config.command is not None:
            channels["command"] = self._command(self.config.command, body)
        results = await asyncio.gather(*channels.values(), return_exceptions=True)
        for channel, result in zip(channels, results, strict=True):
            if isinstance(result, BaseException):
                log.error("alert_failed", channel=channel, alert=alert["alert"], camera=alert["camera"],
                          error=str(result) or type(result).__name__)
            else:
                log.info("alert_sent", channel=channel, alert=alert["alert"], camera=alert["camera"])

    async def _webhook(self, config: WebhookConfig, body: bytes) -> None:
        error: BaseException | None = None
        for attempt in range(config.attempts):
            if attempt:
                await asyncio.sleep(1.0)
            try:
                async with self._session.post(config.url, data=body,
                                              headers={"Content-Type": "application/json"}) as response:
                    if response.status < 300:
                        return
                    error = RuntimeError(f"HTTP {response.status} from {config.url}")
            except Exception as e:  # aiohttp.ClientError, timeouts: try again
                error = e
        raise error or RuntimeError("webhook failed")

    async def _command(self, config: CommandConfig, body: bytes) -> None:
        proc = await asyncio.create_subprocess_exec(*config.argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(config.timeout_s):
                _, stderr = await proc.communicate(body)
        except TimeoutError:
            raise RuntimeError(f"{config.argv[0]} did not finish within {config.timeout_s}s: killed") from None
        finally:
            if proc.returncode is None:  # timed out, or cancelled at stop: leave no stray process
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"{config.argv[0]} exited {proc.returncode}: {stderr.decode(errors='replace')[-300:]}")
