"""The device's shared MQTT connection on a real mosquitto: each tenant gets its own topics only, a tenant's
bug or its leaving does not cost the others their messages, and the last one out says `offline`."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from facewatchd.link.mqtt_client import BrokerConfig
from facewatchd.link.mqtt_connection import MqttConnections
from tests.link.test_mqtt import FAST, eventually, retained
from tests.support.broker import Mosquitto

pytestmark = pytest.mark.timeout(60)
THING = "cam-1"


class Recorder:
    def __init__(self, *topics: str, fail: bool = False) -> None:
        self.topics = topics
        self.fail = fail
        self.received: list[tuple[str, bytes]] = []
        self.connects = 0
        self.drops = 0

    async def mqtt_connected(self, client: aiomqtt.Client) -> None:
        self.connects += 1

    def mqtt_disconnected(self) -> None:
        self.drops += 1

    async def mqtt_message(self, topic: str, payload: bytes) -> None:
        self.received.append((topic, payload))
        if self.fail:
            raise RuntimeError("a plugin's bug")


async def publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="sender") as sender:
        await sender.publish(topic, payload, qos=1)


async def test_tenants_share_one_connection_and_each_gets_its_own_topics(broker: Mosquitto) -> None:
    connections = MqttConnections(THING)
    config = BrokerConfig(host=broker.host, port=broker.port, **FAST)
    link, buggy = Recorder("a/#"), Recorder("b/+", fail=True)
    first = connections.attach(config, "cam-1", link)
    await eventually(lambda: link.connects == 1, what="the first tenant connected")
    late = Recorder("a/x", "c")
    assert connections.attach(config, "facewatchd-cam-1-door", buggy) is first
    assert connections.attach(config, "facewatchd-cam-1-homeassistant", late) is first and len(connections) == 1
    await eventually(lambda: buggy.connects == 1 and late.connects == 1, what="the late tenants joined")
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"online"

    for topic in ("b/1", "a/x", "c", "d"):  # b/1 raises in its tenant: the others still get theirs
        await publish(broker, topic, topic.encode())
    await eventually(lambda: len(late.received) == 2, what="a/x and c")
    assert link.received == [("a/x", b"a/x")] and buggy.received == [("b/1", b"b/1")]
    assert late.received == [("a/x", b"a/x"), ("c", b"c")]

    # a tenant that leaves takes its own topics with it, not a topic another still wants
    await connections.detach(first, late)
    await publish(broker, "c", b"again")
    await publish(broker, "a/x", b"again")
    await eventually(lambda: link.received[-1] == ("a/x", b"again"), what="a/x still subscribed")
    assert late.received == [("a/x", b"a/x"), ("c", b"c")] and link.drops == buggy.drops == 0

    await connections.detach(first, buggy)
    await connections.detach(first, link)
    assert len(connections) == 0 and first.client is None
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"offline"


async def test_other_credentials_or_a_client_id_of_its_own_get_another_connection(broker: Mosquitto) -> None:
    connections = MqttConnections(THING)
    config = BrokerConfig(host=broker.host, port=broker.port, **FAST)
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    shared = connections.attach(config, "cam-1", a)
    own = connections.attach(config.model_copy(update={"client_id": "mine"}), "cam-1-x", b)
    other_user = connections.attach(config.model_copy(update={"username": "someone"}), "cam-1-y", c)
    assert len({id(shared), id(own), id(other_user)}) == 3 and own.client_id == "mine"
    await eventually(lambda: a.connects == b.connects == c.connects == 1, what="three connections")
    for connection, tenant in ((shared, a), (own, b), (other_user, c)):
        await connections.detach(connection, tenant)
    assert len(connections) == 0


async def test_a_broker_restart_reconnects_every_tenant(broker: Mosquitto) -> None:
    connections = MqttConnections(THING)
    config = BrokerConfig(host=broker.host, port=broker.port, **FAST)
    a, b = Recorder("a"), Recorder("b")
    connection = connections.attach(config, "cam-1", a)
    connections.attach(config, "cam-1-door", b)
    await eventually(lambda: a.connects == b.connects == 1, what="connected")
    await asyncio.to_thread(broker.restart)
    await eventually(lambda: a.connects == b.connects == 2, what="both reconnected")
    assert a.drops == b.drops == 1
    await publish(broker, "b", b"after")  # subscriptions were renewed on the new connection
    await eventually(lambda: b.received == [("b", b"after")], what="b's topic after the restart")
    await connections.detach(connection, a)
    await connections.detach(connection, b)
