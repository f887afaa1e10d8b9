"""An MQTT client for plugins (Home Assistant, alerts, the door's MQTT backend, analytics), over aiomqtt.

A `PluginMqtt` is a tenant of the device's connection to its broker (facewatchd/link/mqtt_connection.py):
plugins on the same broker and credentials as the link, or as each other, share one connection, so a broker
that ties the client id to the certificate never sees two connections of one device. The connection
reconnects and carries the device's will (`facewatchd/<thing>/availability`); a plugin that announces its
own availability also lists that topic, so Home Assistant sees it go away when the connection dies.

At each connect the plugin's `on_connect` runs (announce, re-publish state). `publish` never waits for a
connection: offline it raises `MqttUnavailable`, or, for a client made with `keep_offline > 0`, keeps the
message (up to that many, oldest dropped first) and sends it on reconnect.

A plugin's hooks run concurrently (a crowd walking in is a face_detected per face at once), and each QoS 1
publish waits for its PUBACK: `MAX_IN_FLIGHT` bounds how many of one client's wait together, so a burst
goes out a few at a time instead of piling up on the shared connection (where aiomqtt warns "There are 11
pending publish calls" past 10).

Not a module of its own plugin: the leading underscore keeps it out of `builtin_plugin_names()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Awaitable, Callable

import aiomqtt
from pydantic import Field

from facewatchd.link.base import availability_topic
from facewatchd.link.mqtt_client import BrokerConfig as MqttBrokerConfig
from facewatchd.link.mqtt_connection import MqttConnection, MqttConnections


MAX_IN_FLIGHT = 4  # QoS>0 publishes of one plugin awaiting their acknowledgement at once


class MqttUnavailable(RuntimeError):
    """Not connected to the broker (or the publish failed); the message was not sent."""


class BrokerConfig(MqttBrokerConfig):
    """Where a plugin's MQTT client connects; plugin config classes extend it with their own keys."""

    client_id: str | None = Field(None, description="default: one connection per broker and credentials, named "
                                                    "after its first user; a client id of its own gives this "
                                                    "plugin a connection of its own")


class PluginMqtt:
    def __init__(self, config: BrokerConfig, client_id: str, connections: MqttConnections, *,
                 subscriptions: tuple[str, ...] = (),
                 on_connect: Callable[[], Awaitable[None]] | None = None,
                 on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
                 keep_offline: int = 0) -> None:
        self.config = config
        self.client_id = config.client_id or client_id
        self.topics = subscriptions
        self._connections = connections
        self._on_connect = on_connect
        self._on_message = on_message
        self._kept: deque[tuple[str, bytes, bool, int]] = deque(maxlen=keep_offline or 1)
        self._keep = keep_offline > 0
        self._connection: MqttConnection | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def connection_availability_topic(self) -> str:
        """Retained `online`/`offline` of the connection this client is on (its will)."""
        return availability_topic(self._connections.thing)

    def start(self) -> None:
        self._connection = self._connections.attach(self.config, self.client_id, self)

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self.connected

    async def stop(self, last: tuple[str, bytes] | None = None) -> None:
        """Publish `last` (retained; e.g. availability `offline`), then leave the connection."""
        if last is not None and self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(3):
                    await self._client.publish(last[0], last[1], qos=1, retain=True)
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._connections.detach(connection, self)
        self._client = None
        self._connected.clear()

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, qos: int = 1,
                      timeout: float = 5.0) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        client = self._client
        if client is None:
            if self._keep:
                self._kept.append((topic, data, retain, qos))
                return
            raise MqttUnavailable(f"not connected to {self.config.host}:{self.config.port}: "
                                  f"{self._error() or 'connecting'}")
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that lands as
            # the publish completes (python/cpython#86296), and the plugin's task then never stops
            async with asyncio.timeout(timeout), self._in_flight:  # the wait for a turn counts in the timeout
                await client.publish(topic, data, qos=qos, retain=retain)
        except (aiomqtt.MqttError, TimeoutError) as e:
            if self._keep:
                self._kept.append((topic, data, retain, qos))
                return
            raise MqttUnavailable(f"publish to {topic} failed: {e or 'timed out'}") from e

    async def subscribe(self, *topics: str, unsubscribe: bool = False) -> None:
        """(Un)subscribe on the current connection only (the `subscriptions` given at init are renewed at each
        connect; these are not)."""
        connection = self._connection
        if connection is None or self._client is None:
            raise MqttUnavailable(f"not connected to {self.config.host}:{self.config.port}")
        try:
            if unsubscribe:
                await connection.unsubscribe(self, topics)
            else:
                await connection.subscribe(self, topics)
        except (aiomqtt.MqttError, TimeoutError) as e:
            raise MqttUnavailable(f"subscribe to {topics} failed: {e}") from e

    def _error(self) -> str | None:
        return self._connection.last_error if self._connection else self.last_error

    # -- the connection's tenant -----------------------------------------------------------------

    async def mqtt_connected(self, client: aiomqtt.Client) -> None:
        self._client = client
        if self._on_connect is not None:
            await self._on_connect()
        while self._kept:  # what was published while we were away, oldest first
            topic, data, retain, qos = self._kept[0]
            await client.publish(topic, data, qos=qos, retain=retain)
            self._kept.popleft()
        self.last_error = None
        self._connected.set()

    def mqtt_disconnected(self) -> None:
        self._client = None
        self._connected.clear()
        self.last_error = self._error()

    async def mqtt_message(self, topic: str, payload: bytes) -> None:
        if self._on_message is not None:
            await self._on_message(topic, payload)
