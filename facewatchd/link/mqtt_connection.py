"""One MQTT connection per broker identity, shared by every part of the device that talks to that broker.

A broker that ties the client id to the certificate (the shipped mosquitto config: `use_username_as_clientid`)
lets one identity hold one connection: a second one with the same certificate takes the first one's place,
and the two keep knocking each other off. So the link, the Home Assistant plugin and the door's MQTT backend
do not connect on their own: each is a *tenant* of the one `MqttConnection` that `MqttConnections` keeps for
its broker and credentials.

`MqttConnection` runs the reconnect loop (aiomqtt has none): connect with the device's last will
(`facewatchd/<thing>/availability` = `offline`), announce `online`, subscribe to every tenant's topics,
call each tenant's `mqtt_connected`, hand each message to the tenants whose topics match it, and reconnect after a
backoff with jitter. A tenant's failure is logged and never drops the connection the others use. The
connection says `offline` and closes when its last tenant leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any, Protocol

import aiomqtt
import structlog

from facewatchd.aio import cancel_and_wait
from facewatchd.link.base import availability_topic
from facewatchd.link.mqtt_client import Backoff, BrokerConfig, PahoLog, connect_client, describe_failure, tls_params


class Tenant(Protocol):
    """A part of the device on a shared connection."""

    topics: tuple[str, ...]  # subscribed at every connect (more may be added with `MqttConnection.subscribe`)

    async def mqtt_connected(self, client: aiomqtt.Client) -> None:
        """The connection is up (again) and subscribed to `topics`: announce, re-publish, ask."""

    def mqtt_disconnected(self) -> None:
        """The connection dropped; `MqttConnection.last_error` says why. It reconnects by itself."""

    async def mqtt_message(self, topic: str, payload: bytes) -> None:
        """A message on one of this tenant's topics."""


def broker_identity(config: BrokerConfig) -> tuple[Any, ...]:
    """What a broker tells clients apart by: where, and who (certificate, user name, a client id given)."""
    password = config.password.get_secret_value() if config.password else None
    return (config.host, config.port, config.use_tls, config.ca_file, config.cert_file, config.key_file,
            config.username, password, config.client_id)


class MqttConnection:
    def __init__(self, config: BrokerConfig, client_id: str, thing: str) -> None:
        self.config = config
        self.client_id = config.client_id or client_id
        self.availability_topic = availability_topic(thing)
        self.client: aiomqtt.Client | None = None
        self.last_error: str | None = None
        self.auth_failed = False
        self.state_changed = asyncio.Event()  # set at each connect and drop
        self._tenants: dict[Tenant, list[str]] = {}  # each tenant's topic filters
        self._subscribed: Counter[str] = Counter()  # filter → tenants that asked for it, on this connection
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger(__name__).bind(client_id=self.client_id,
                                                        broker=f"{config.host}:{config.port}")

    @property
    def tenants(self) -> int:
        return len(self._tenants)

    def where(self) -> str:
        return f"{self.config.host}:{self.config.port} as {self.client_id!r}"

    def attach(self, tenant: Tenant) -> None:
        """Add a tenant; the first one starts the connection, a later one joins it (at once when it is up)."""
        self._tenants[tenant] = list(tenant.topics)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt-{self.client_id}")
        elif self.client is not None:
            asyncio.get_running_loop().create_task(self._join_late(self.client, tenant),
                                                   name=f"mqtt-join-{self.client_id}")

    async def detach(self, tenant: Tenant) -> None:
        """Remove a tenant (its topics are unsubscribed unless another still wants them). The last one out
        says `offline` (retained: a clean disconnect sends no will) and closes the connection."""
        topics = self._tenants.pop(tenant, [])
        client = self.client
        if self._tenants:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._release(client, topics)
            return
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(3):
                    await client.publish(self.availability_topic, b"offline", qos=1, retain=True)
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_and_wait(task)

    async def subscribe(self, tenant: Tenant, topics: tuple[str, ...]) -> None:
        """Subscribe a tenant to more topics, on the current connection only."""
        client = self._require_client()
        self._tenants.setdefault(tenant, []).extend(topics)
        fresh = [t for t in topics if not self._subscribed[t]]
        self._subscribed.update(topics)
        if fresh:
            await client.subscribe([(t, 1) for t in fresh])

    async def unsubscribe(self, tenant: Tenant, topics: tuple[str, ...]) -> None:
        mine = self._tenants.get(tenant, [])
        for topic in topics:
            if topic in mine:
                mine.remove(topic)
        await self._release(self._require_client(), list(topics))

    def _require_client(self) -> aiomqtt.Client:
        if self.client is None:
            raise aiomqtt.MqttError(f"not connected to {self.where()}: {self.last_error or 'connecting'}")
        return self.client

    async def _release(self, client: aiomqtt.Client | None, topics: list[str]) -> None:
        """Unsubscribe the filters no tenant wants any more."""
        unused = []
        for topic in topics:
            self._subscribed[topic] -= 1
            if self._subscribed[topic] <= 0:
                del self._subscribed[topic]
                unused.append(topic)
        if unused and client is not None:
            async with asyncio.timeout(3):
                await client.unsubscribe(unused)

    async def _join(self, client: aiomqtt.Client, tenant: Tenant) -> None:
        """Subscribe what the tenant wants and nobody has yet, then tell it the connection is up. A drop
        (MqttError) is the caller's; a tenant's own bug is logged, and the others keep the connection."""
        if tenant not in self._tenants:
            return  # it left meanwhile
        topics = self._tenants[tenant]
        fresh = [t for t in dict.fromkeys(topics) if not self._subscribed[t]]
        self._subscribed.update(topics)
        if fresh:
            await client.subscribe([(t, 1) for t in fresh])
        try:
            await tenant.mqtt_connected(client)
        except aiomqtt.MqttError:
            raise
        except Exception:
            self._log.exception("mqtt_tenant_failed", tenant=type(tenant).__name__)

    async def _join_late(self, client: aiomqtt.Client, tenant: Tenant) -> None:
        """A tenant that arrived while the connection was up."""
        with contextlib.suppress(aiomqtt.MqttError):  # the read loop sees the drop, and joins it at reconnect
            await self._join(client, tenant)

    def _new_client(self, paho: PahoLog) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, identifier=self.client_id, username=c.username,
            password=c.password.get_secret_value() if c.password else None, keepalive=c.keepalive,
            will=aiomqtt.Will(self.availability_topic, b"offline", qos=1, retain=True),
            tls_params=tls_params(c.ca_file, c.cert_file, c.key_file) if c.use_tls else None,
            logger=paho.logger)

    def _set_client(self, client: aiomqtt.Client | None) -> None:
        self.client = client
        self.state_changed.set()

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            paho = PahoLog(self._log)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = self._new_client(paho)
                    await connect_client(client, stack, paho)
                    self._subscribed.clear()
                    await client.publish(self.availability_topic, b"online", qos=1, retain=True)
                    self.last_error, self.auth_failed = None, False
                    self._set_client(client)
                    backoff.reset()
                    self._log.info("mqtt_online", tenants=len(self._tenants))
                    for tenant in list(self._tenants):  # one who comes meanwhile joins by itself (attach)
                        await self._join(client, tenant)
                    async for message in client.messages:
                        await self._dispatch(message)
                    raise aiomqtt.MqttError("message stream ended")
            except aiomqtt.MqttError as e:
                detail = f"{e}: {paho.error}" if paho.error and paho.error not in str(e) else str(e)
                self.last_error, self.auth_failed = describe_failure(detail)
                (self._log.error if self.auth_failed else self._log.warning)("mqtt_offline", error=self.last_error)
            except Exception as e:  # a bug must not end the loop: log it and reconnect
                self.last_error, self.auth_failed = f"{type(e).__name__}: {e}", False
                self._log.exception("mqtt_failed")
            finally:
                self._set_client(None)
                for tenant in list(self._tenants):
                    tenant.mqtt_disconnected()
            await asyncio.sleep(backoff.next())

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        topic = str(message.topic)
        for tenant, topics in list(self._tenants.items()):
            if any(message.topic.matches(t) for t in topics):
                try:
                    await tenant.mqtt_message(topic, payload)
                except Exception:
                    self._log.exception("mqtt_tenant_failed", tenant=type(tenant).__name__, topic=topic)


class MqttConnections:
    """The device's MQTT connections, one per broker identity (see `broker_identity`)."""

    def __init__(self, thing: str) -> None:
        self.thing = thing
        self._connections: dict[tuple[Any, ...], MqttConnection] = {}

    def attach(self, config: BrokerConfig, client_id: str, tenant: Tenant) -> MqttConnection:
        """The connection for `config`'s broker identity, with `tenant` on it. `client_id` names a new
        connection when the config gives none (the first tenant's; the broker may use the certificate's)."""
        key = broker_identity(config)
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = MqttConnection(config, client_id, self.thing)
        connection.attach(tenant)
        return connection

    async def detach(self, connection: MqttConnection, tenant: Tenant) -> None:
        await connection.detach(tenant)
        if not connection.tenants:
            key = broker_identity(connection.config)
            if self._connections.get(key) is connection:
                del self._connections[key]

    def __len__(self) -> int:
        return len(self._connections)
