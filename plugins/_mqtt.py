"""An MQTT connection for plugins (Home Assistant, alerts, the door's MQTT backend), over aiomqtt.

aiomqtt has no reconnect of its own, so `PluginMqtt` runs one loop: connect (with a last will when
given), subscribe, run the plugin's `on_connect` (announce, re-publish state), read messages until the
connection drops, and reconnect after a backoff with jitter. `publish` never waits for a connection:
offline it raises `MqttUnavailable`, or, for a client made with `keep_offline > 0`, keeps the message
(up to that many, oldest dropped first) and sends it on reconnect.

Not a module of its own plugin: the leading underscore keeps it out of `builtin_plugin_names()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Awaitable, Callable

import aiomqtt
import structlog

from pydantic import Field

from facewatchd.link.mqtt import Backoff, PahoLog, connect_client, tls_params
from facewatchd.link.mqtt import BrokerConfig as MqttBrokerConfig


class MqttUnavailable(RuntimeError):
    """Not connected to the broker (or the publish failed); the message was not sent."""


class BrokerConfig(MqttBrokerConfig):
    """Where a plugin's MQTT client connects; plugin config classes extend it with their own keys."""

    client_id: str | None = Field(None, description="default: facewatchd-<thing>-<plugin>")


class PluginMqtt:
    def __init__(self, config: BrokerConfig, client_id: str, *, will: tuple[str, bytes] | None = None,
                 subscriptions: tuple[str, ...] = (),
                 on_connect: Callable[[], Awaitable[None]] | None = None,
                 on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
                 keep_offline: int = 0) -> None:
        self.config = config
        self.client_id = config.client_id or client_id
        self._will = will
        self._subscriptions = subscriptions
        self._on_connect = on_connect
        self._on_message = on_message
        self._kept: deque[tuple[str, bytes, bool, int]] = deque(maxlen=keep_offline or 1)
        self._keep = keep_offline > 0
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("facewatchd.plugins.mqtt").bind(client_id=self.client_id,
                                                                         broker=f"{config.host}:{config.port}")
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self.connected

    async def stop(self, last: tuple[str, bytes] | None = None) -> None:
        """Publish `last` (retained; e.g. availability `offline`, as a clean disconnect sends no will), then close."""
        if last is not None and self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(3):
                    await self._client.publish(last[0], last[1], qos=1, retain=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1,
                      timeout: float = 5.0) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        client = self._client
        if client is None:
            if self._keep:
                self._kept.append((topic, data, retain, qos))
                return
            raise MqttUnavailable(f"not connected to {self.config.host}:{self.config.port}: "
                                  f"{self.last_error or 'connecting'}")
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands as
            # the publish completes (python/cpython#86296), and the plugin's task then never stops
            async with asyncio.timeout(timeout):
                await client.publish(topic, data, qos=qos, retain=retain)
        except (aiomqtt.MqttError, TimeoutError) as e:
            if self._keep:
                self._kept.append((topic, data, retain, qos))
                return
            raise MqttUnavailable(f"publish to {topic} failed: {e or 'timed out'}") from e

    async def subscribe(self, *topics: str, unsubscribe: bool = False) -> None:
        """(Un)subscribe on the current connection only (the `subscriptions` given at init are renewed at each
        connect; these are not)."""
        client = self._client
        if client is None:
            raise MqttUnavailable(f"not connected to {self.config.host}:{self.config.port}")
        try:
            if unsubscribe:
                await client.unsubscribe(list(topics))
            else:
                await client.subscribe([(t, 1) for t in topics])
        except aiomqtt.MqttError as e:
            raise MqttUnavailable(f"subscribe to {topics} failed: {e}") from e

    def _new_client(self, paho: PahoLog) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, identifier=self.client_id, username=c.username,
            password=c.password.get_secret_value() if c.password else None, keepalive=c.keepalive,
            will=aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True) if self._will else None,
            tls_params=tls_params(c.ca_file, c.cert_file, c.key_file) if c.use_tls else None,
            logger=paho.logger)

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            paho = PahoLog(self._log)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = self._new_client(paho)
                    await connect_client(client, stack, paho)
                    if self._subscriptions:
                        await client.subscribe([(t, 1) for t in self._subscriptions])
                    self._client = client
                    if self._on_connect is not None:
                        await self._on_connect()
                    while self._kept:  # what was published while we were away, oldest first
                        topic, data, retain, qos = self._kept[0]
                        await client.publish(topic, data, qos=qos, retain=retain)
                        self._kept.popleft()
                    self.last_error = None
                    self._connected.set()
                    backoff.reset()
                    self._log.info("plugin_mqtt_online")
                    async for message in client.messages:
                        if self._on_message is not None:
                            payload = message.payload if isinstance(message.payload, bytes) else \
                                str(message.payload or "").encode()
                            await self._on_message(str(message.topic), payload)
                    raise aiomqtt.MqttError("message stream ended")
            except aiomqtt.MqttError as e:
                self.last_error = f"{e}: {paho.error}" if paho.error and paho.error not in str(e) else str(e)
                self._log.warning("plugin_mqtt_offline", error=self.last_error)
            except Exception as e:  # a bug in a callback must not end the loop: log it and reconnect
                self.last_error = f"{type(e).__name__}: {e}"
                self._log.exception("plugin_mqtt_failed")
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(backoff.next())
