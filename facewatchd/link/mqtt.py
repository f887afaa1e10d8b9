"""A link over any MQTT broker (aiomqtt 2.x), speaking the AWS IoT shadow topics.

The link is a tenant of the device's connection to its broker (link/mqtt_connection.py), which it may share
with plugins on the same certificate. At each connect it subscribes to the shadow's delta and response
topics and asks the shadow for its current state (`/get`, so a delta missed while offline is recovered);
the connection announces `online` (retained; the will says `offline`) and reconnects after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Literal

import aiomqtt
import structlog
from pydantic import Field

from facewatchd.aio import cancel_and_wait
from facewatchd.link.base import MAX_PAYLOAD_BYTES, LinkAuthError, LinkDown, availability_topic
from facewatchd.link.mqtt_client import BrokerConfig
from facewatchd.link.mqtt_connection import MqttConnection, MqttConnections
from facewatchd.messages import FaceQuery, MessageError, json_object, uplink_topic

_GET_RETRY_MIN_S = 2.0  # a /get nobody answered (e.g. the shadow service reconnects after us) is asked again


class MqttLinkConfig(BrokerConfig):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1)  # no default: a device must be told where its broker is
    client_id: str | None = None  # default: the thing name


class MqttLink:
    """The Link protocol (facewatchd/link/base.py) over an MQTT broker."""

    def __init__(self, thing: str, config: MqttLinkConfig, connections: MqttConnections | None = None) -> None:
        self.thing = thing
        self.config = config
        self.client_id = config.client_id or thing
        self._connections = connections or MqttConnections(thing)
        shadow = f"$aws/things/{thing}/shadow"
        self._topic_update = f"{shadow}/update"
        self._topic_delta = f"{shadow}/update/delta"
        self._topic_update_rejected = f"{shadow}/update/rejected"
        self._topic_get = f"{shadow}/get"
        self._topic_get_accepted = f"{shadow}/get/accepted"
        self._topic_get_rejected = f"{shadow}/get/rejected"
        self.topics = (self._topic_delta, self._topic_get_accepted, self._topic_get_rejected,
                       self._topic_update_rejected)
        self.availability_topic = availability_topic(thing)
        self._log = structlog.get_logger(__name__).bind(thing=thing, broker=f"{config.host}:{config.port}")
        self._connection: MqttConnection | None = None
        self._deltas: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: the link closed
        self._get_answered = asyncio.Event()
        self._sync: asyncio.Task[None] | None = None

    # -- Link protocol ---------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._connection is not None and self._connection.client is not None

    @property
    def last_error(self) -> str | None:
        return self._connection.last_error if self._connection else None

    @property
    def auth_failed(self) -> bool:
        return self._connection.auth_failed if self._connection else False

    async def __aenter__(self) -> "MqttLink":
        self._connection = self._connections.attach(self.config, self.client_id, self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sync is not None:
            await cancel_and_wait(self._sync)
        if self._connection is not None:
            await self._connections.detach(self._connection, self)
        self._deltas.put_nowait(None)

    async def send_query(self, query: FaceQuery) -> None:
        await self._publish(uplink_topic(self.thing), query.to_json())

    def deltas(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter_deltas()

    async def update_shadow(self, state: dict[str, Any]) -> None:
        payload = json.dumps({"state": state}, separators=(",", ":")).encode()
        await self._publish(self._topic_update, payload)

    # -- the connection's tenant -----------------------------------------------------------------

    async def mqtt_connected(self, client: aiomqtt.Client) -> None:
        self._log.info("mqtt link online")
        if self._sync is not None:
            self._sync.cancel()
        self._sync = asyncio.create_task(self._sync_shadow(client), name=f"shadow-get-{self.thing}")

    def mqtt_disconnected(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
        (self._log.error if self.auth_failed else self._log.warning)("mqtt link offline", error=self.last_error)

    async def mqtt_message(self, topic: str, payload: bytes) -> None:
        self._dispatch(topic, payload)

    # -- extras ----------------------------------------------------------------------------------

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until connected; raises LinkAuthError as soon as the broker/TLS refuses us,
        LinkDown (naming the last error) on timeout."""
        if self._connection is None:
            raise LinkDown("the link is not open")
        changed = self._connection.state_changed
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.online:
            if self.auth_failed and self.last_error:
                c = self.config
                files = ", ".join(f"{k}={v}" for k, v in (("ca_file", c.ca_file), ("cert_file", c.cert_file),
                                                          ("key_file", c.key_file)) if v)
                raise LinkAuthError(f"cannot connect to {self._where()}: {self.last_error}"
                                    + (f" [{files}]" if files else ""))
            changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise LinkDown(f"not connected to {self._where()} after {timeout}s: {self.last_error or 'no answer'}")
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def _where(self) -> str:
        return self._connection.where() if self._connection else f"{self.config.host}:{self.config.port}"

    # -- internals -------------------------------------------------------------------------------

    async def _iter_deltas(self) -> AsyncIterator[dict[str, Any]]:
        while (state := await self._deltas.get()) is not None:
            yield state
        self._deltas.put_nowait(None)  # keep the link closed for any other reader

    async def _publish(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MessageError(f"payload for {topic} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte "
                               "MQTT limit (AWS IoT)")
        client = self._connection.client if self._connection else None
        if client is None:
            raise LinkDown(f"not connected to {self._where()}: {self.last_error or 'connecting'}")
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as e:
            raise LinkDown(f"publish to {topic} failed: {e}") from e

    async def _sync_shadow(self, client: aiomqtt.Client) -> None:
        """Ask for the shadow until it answers: its delta covers whatever changed while we were away."""
        self._get_answered.clear()
        delay = max(_GET_RETRY_MIN_S, self.config.reconnect_min_s)
        try:
            while True:
                await client.publish(self._topic_get, b"", qos=1)
                try:
                    async with asyncio.timeout(delay):
                        await self._get_answered.wait()
                    return
                except asyncio.TimeoutError:
                    self._log.info("shadow get unanswered, asking again", after_s=delay)
                    delay = min(delay * 2, max(self.config.reconnect_max_s, delay))
        except aiomqtt.MqttError as e:
            self._log.warning("shadow get failed", error=str(e))  # the read loop sees the drop and reconnects

    def _dispatch(self, topic: str, payload: Any) -> None:
        try:
            body = json_object(payload)
            if topic == self._topic_delta:
                state = body.get("state")
                if not isinstance(state, dict):
                    raise MessageError("delta without a `state` object")
                self._deltas.put_nowait(state)
            elif topic == self._topic_get_accepted:
                if body.get("clientToken") is not None:
                    return  # another client's get on this thing; ours carries no token
                self._get_answered.set()
                state = body.get("state")
                if not isinstance(state, dict):
                    raise MessageError("get/accepted without a `state` object")
                delta = state.get("delta")
                if isinstance(delta, dict) and delta:
                    self._deltas.put_nowait(delta)
            elif topic in (self._topic_get_rejected, self._topic_update_rejected):
                if topic == self._topic_get_rejected and body.get("clientToken") is None:
                    self._get_answered.set()
                if body.get("code") == 404 and topic == self._topic_get_rejected:
                    self._log.debug("no shadow yet", message=body.get("message"))
                else:
                    self._log.warning("shadow request rejected", topic=topic, code=body.get("code"),
                                      message=body.get("message"))
            else:
                self._log.warning("message on an unexpected topic", topic=topic)
        except MessageError as e:
            self._log.warning("skipped malformed message", topic=topic, error=str(e))
