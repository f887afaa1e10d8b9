"""What actually moves the lock, chosen by the `type` key of `[plugins.door.backend]`:

* `gpio`: a relay on a GPIO line through libgpiod v2's Python bindings (`gpiod`, Linux character
  device). The line is requested as an output driven inactive (locked) at start; unlock = active.
* `http`: an HTTP relay (Shelly, Tasmota, a controller's API): one request to unlock, one to lock.
* `mqtt`: a command published to a topic (a Zigbee2MQTT lock, an ESPHome relay, a Home Assistant lock
  automation); never queued while the broker is away, so a late unlock can never arrive.

Every backend raises on failure; the plugin turns that into a denial and a relock. Each has its own
config class, so a typo in a key names the backend's key.

A lock that relocks by itself is the one that holds when this process cannot: `{seconds}` in an http
backend's `unlock_url` or `unlock_body`, or in an mqtt backend's `payload_unlock`, is replaced by `unlock_s`,
so the unlock command itself says for how long (Shelly `?turn=on&timer={seconds}`, a Zigbee relay's
`on_time`, an ESPHome script). The plugin still locks after `unlock_s`, from its event loop and, should
that loop be blocked, from a thread of its own (`lock_blocking`: gpio and http; not mqtt).
"""

from __future__ import annotations

import asyncio
import math
import threading
import urllib.request
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from plugins._mqtt import BrokerConfig, PluginMqtt

if TYPE_CHECKING:
    from facewatchd.link.mqtt_connection import MqttConnections
    from facewatchd.plugins import PluginContext


class Backend(Protocol):
    async def open(self) -> None: ...
    async def unlock(self, seconds: float) -> None: ...
    async def lock(self) -> None: ...
    async def close(self) -> None: ...

    def lock_blocking(self) -> bool:
        """Lock from a plain thread, without the event loop (which may be blocked); False if this backend
        cannot (mqtt: its connection belongs to the loop)."""
        ...


def pulse(template: str, seconds: float) -> str:
    """The unlock command with `{seconds}` (how long the lock stays open by itself) filled in."""
    return template.replace("{seconds}", str(max(1, math.ceil(seconds))))


class GpioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["gpio"] = "gpio"
    chip: str = Field("/dev/gpiochip0", description="the GPIO character device")
    line: int | str = Field(description="line offset on the chip, or its name")
    active_low: bool = Field(False, description="true when the relay closes on a low level")
    timeout_s: float = Field(2.0, gt=0, le=4, description="longest wait for the backend to act")


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["http"] = "http"
    unlock_url: str = Field(pattern=r"^https?://", description="request that unlocks; {seconds}: unlock_s, for a "
                            "relay that relocks by itself (Shelly ?turn=on&timer={seconds})")
    lock_url: str = Field(pattern=r"^https?://", description="request that locks")
    method: Literal["GET", "POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    unlock_body: str | None = Field(None, description="request body to unlock (POST/PUT)")
    lock_body: str | None = Field(None, description="request body to lock (POST/PUT)")
    timeout_s: float = Field(2.0, gt=0, le=4)


class MqttConfig(BrokerConfig):
    type: Literal["mqtt"] = "mqtt"
    command_topic: str = Field(pattern=r"^[^#+]+$", description="where the lock takes its commands")
    payload_unlock: str = Field("UNLOCK", description="{seconds}: unlock_s, for a lock that relocks by itself")
    payload_lock: str = "LOCK"
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    timeout_s: float = Field(2.0, gt=0, le=4)


class GpioBackend:
    """One output line, held for the daemon's lifetime (libgpiod v2: `gpiod.request_lines`)."""

    def __init__(self, config: GpioConfig) -> None:
        self.config = config
        self._request: Any = None
        self._line = threading.Lock()

    def _open_sync(self) -> Any:
        import gpiod  # the `gpio` extra; imported here so other backends do not need it
        from gpiod.line import Direction, Value

        settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE,
                                      active_low=self.config.active_low)
        return gpiod.request_lines(self.config.chip, consumer="facewatchd-door",
                                   config={self.config.line: settings})

    def _set_sync(self, active: bool) -> None:
        from gpiod.line import Value

        with self._line:  # the loop's worker and the relock thread share the line
            if self._request is None:  # the chip was not there at start: try again
                self._request = self._open_sync()
            self._request.set_value(self.config.line, Value.ACTIVE if active else Value.INACTIVE)

    def lock_blocking(self) -> bool:
        self._set_sync(False)
        return True

    async def open(self) -> None:
        self._request = await asyncio.to_thread(self._open_sync)  # requested inactive: locked

    async def unlock(self, seconds: float) -> None:
        await asyncio.to_thread(self._set_sync, True)

    async def lock(self) -> None:
        await asyncio.to_thread(self._set_sync, False)

    async def close(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            await asyncio.to_thread(request.release)


class HttpBackend:
    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self._session: Any = None

    async def open(self) -> None:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                                              headers=self.config.headers)

    async def _request(self, url: str, body: str | None) -> None:
        if self._session is None:
            await self.open()
        data = body if self.config.method != "GET" else None
        async with self._session.request(self.config.method, url, data=data) as response:
            if response.status >= 300:
                text = (await response.text())[:200]
                raise RuntimeError(f"HTTP {response.status} from {url}: {text}")

    async def unlock(self, seconds: float) -> None:
        body = None if self.config.unlock_body is None else pulse(self.config.unlock_body, seconds)
        await self._request(pulse(self.config.unlock_url, seconds), body)

    async def lock(self) -> None:
        await self._request(self.config.lock_url, self.config.lock_body)

    def lock_blocking(self) -> bool:
        body = self.config.lock_body.encode() if self.config.lock_body and self.config.method != "GET" else None
        request = urllib.request.Request(self.config.lock_url, data=body, method=self.config.method,
                                         headers=self.config.headers)
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:  # noqa: S310 (config URL)
            if response.status >= 300:
                raise RuntimeError(f"HTTP {response.status} from {self.config.lock_url}")
        return True

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class MqttBackend:
    def __init__(self, config: MqttConfig, thing: str, connections: MqttConnections) -> None:
        self.config = config
        self.mqtt = PluginMqtt(config, f"facewatchd-{thing}-door", connections)

    async def open(self) -> None:
        self.mqtt.start()
        await self.mqtt.wait_connected(self.config.timeout_s)

    async def _command(self, payload: str) -> None:
        if not self.mqtt.connected:
            await self.mqtt.wait_connected(self.config.timeout_s / 2)
        await self.mqtt.publish(self.config.command_topic, payload, qos=self.config.qos, retain=self.config.retain,
                                timeout=self.config.timeout_s)

    async def unlock(self, seconds: float) -> None:
        await self._command(pulse(self.config.payload_unlock, seconds))

    async def lock(self) -> None:
        await self._command(self.config.payload_lock)

    def lock_blocking(self) -> bool:
        return False  # its broker connection lives on the loop: a pulse in payload_unlock is its safeguard

    async def close(self) -> None:
        await self.mqtt.stop()


BackendConfig = GpioConfig | HttpConfig | MqttConfig


def create_backend(config: BackendConfig, context: PluginContext) -> Backend:
    if isinstance(config, GpioConfig):
        return GpioBackend(config)
    if isinstance(config, HttpConfig):
        return HttpBackend(config)
    return MqttBackend(config, context.config.device.thing, context.mqtt)
