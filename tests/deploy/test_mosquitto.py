"""The shipped broker configuration (deploy/mosquitto/) on a real mosquitto with mutual TLS: each device
is confined to its own topics and shadow, and nobody can take the resolver's identity.

The broker runs the shipped facewatchd.conf and facewatchd.acl as they are; only the listener, the
certificate paths and the ACL's path are pointed at this test's files."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from pathlib import Path
from typing import AsyncIterator

import aiomqtt
import cv2
import pytest

from facewatchd.app.device import Daemon
from facewatchd.messages import FaceQuery, new_face_id, uplink_topic
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
from facewatchd.vision.analyzer import FaceAnalyzer
from facewatchd.plugins import PluginHost
from facewatchd.resolver.mqtt_adapter import ResolverService, ResolverServiceConfig
from tests.support.broker import HOST, Mosquitto, free_port
from tests.support.daemon import FIXTURES, ROOT, make_config
from tests.support.tls import CertPair, TestPki
from tests.test_onprem import enroll, eventually, face_crops, write_frames

pytestmark = pytest.mark.timeout(120)
DEPLOY = ROOT / "deploy" / "mosquitto"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


def shipped_config(port: int, pki: TestPki, workdir: Path) -> str:
    """deploy/mosquitto/facewatchd.conf with this test's listener, certificates and paths."""
    paths = {"listener": f"listener {port} {HOST}", "cafile": f"cafile {pki.ca_file}",
             "certfile": f"certfile {pki.server.cert}", "keyfile": f"keyfile {pki.server.key}",
             "acl_file": f"acl_file {DEPLOY / 'facewatchd.acl'}"}
    lines = []
    for line in (DEPLOY / "facewatchd.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        lines.append(paths.pop(key, line))
    assert not paths, f"the shipped config lost its {sorted(paths)} line(s)"
    lines += ["persistence false", f"log_dest file {workdir / 'mosquitto.log'}", "log_type all"]
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


@pytest.fixture
def acl_broker(tmp_path: Path, pki: TestPki) -> AsyncIterator[Mosquitto]:
    port = free_port()
    workdir = tmp_path / "mosquitto-acl"
    workdir.mkdir()
    with Mosquitto(workdir, pki=pki, port=port, config=shipped_config(port, pki, workdir)) as broker:
        yield broker


def tls(pki: TestPki, pair: CertPair) -> aiomqtt.TLSParameters:
    return aiomqtt.TLSParameters(ca_certs=str(pki.ca_file), certfile=str(pair.cert), keyfile=str(pair.key),
                                 cert_reqs=ssl.CERT_REQUIRED)


def face_query(thing: str) -> FaceQuery:
    image = cv2.imread(str(FIXTURES / "biden.jpg"))
    face = FaceAnalyzer().largest(image)
    assert face is not None
    return FaceQuery(new_face_id(), thing, "front", "t-1", face_crop_jpeg(image, face.face, UplinkConfig()),
                     face.embedding, time.time())


class Spy:
    """An MQTT client that subscribes where it can and records whatever reaches it."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: list[tuple[str, bytes]] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.client.messages:
            self.received.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]

    def close(self) -> None:
        self._task.cancel()


async def test_a_device_cannot_reach_another_devices_topics_or_shadow_or_take_the_resolvers_id(
        acl_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> None:
    server = ResolverServiceConfig(host=acl_broker.host, port=acl_broker.port, ca_file=pki.ca_file,
                                   cert_file=pki.client("facewatchd-resolver").cert,
                                   key_file=pki.client("facewatchd-resolver").key,
                                   shadow_cert_file=pki.client("facewatchd-shadow").cert,
                                   shadow_key_file=pki.client("facewatchd-shadow").key, **FAST)
    async with ResolverService(server, tmp_path / "server") as service:
        await service.ready(timeout=15)
        obama = await enroll(service, "Barack Obama", FIXTURES / "obama.jpg")
        door1 = pki.client("door-1")
        frames = write_frames(tmp_path / "frames", face_crops(FIXTURES / "obama1.jpg", 1), lambda i: 0)
        config = make_config(tmp_path / "door-1", frames, device={"thing": "door-1"}, link={
            "type": "mqtt", "host": acl_broker.host, "port": acl_broker.port, "ca_file": str(pki.ca_file),
            "cert_file": str(door1.cert), "key_file": str(door1.key), **FAST},
            cameras=[{"id": "front", "source": str(frames), "loop": True, "fps": 4, "pace": "realtime"}])
        daemon = Daemon(config, PluginHost(config))
        device = asyncio.create_task(daemon.run())
        door2 = pki.client("door-2")
        try:
            # door-1, a real daemon under the shipped ACL, gets its face named through its own shadow
            await eventually(lambda: daemon.recognizer is not None
                             and daemon.recognizer.cache.persons() == {obama: "Barack Obama"}, 60,
                             "door-1 to be answered through its shadow")
            received_before = service.stats.received
            async with aiomqtt.Client(HOST, acl_broker.port, identifier="facewatchd-resolver",
                                      tls_params=tls(pki, door2)) as attacker:
                spy = Spy(attacker)
                for topic in ("$aws/things/door-1/shadow/#", "facewatchd/door-1/#", "facewatchd/+/faces/unknown",
                              "#", "$aws/things/+/shadow/#"):
                    await attacker.subscribe(topic, qos=1)
                # door-2 names a stranger "Barack Obama" in door-1's shadow, and sends a face as door-1
                forged = {"state": {"desired": {"persons": {"person-stranger": {"name": "Barack Obama"}}}}}
                await attacker.publish("$aws/things/door-1/shadow/update", json.dumps(forged), qos=1)
                await attacker.publish(uplink_topic("door-1"), face_query("door-1").to_json(), qos=1)
                # what door-2 may do: send its own face and read its own answer, which proves it was connected
                # and heard all along, and that the resolver was not pushed off by the client id it asked for
                await attacker.subscribe("$aws/things/door-2/shadow/update/delta", qos=1)
                own = face_query("door-2")
                await attacker.publish(uplink_topic("door-2"), own.to_json(), qos=1)
                delta = "$aws/things/door-2/shadow/update/delta"
                await eventually(lambda: any(t == delta and own.face_id.encode() in p for t, p in spy.received), 30,
                                 "door-2's own answer")
                spy.close()
            doc = await service.shadow.get("door-1")  # type: ignore[union-attr]
            assert "person-stranger" not in json.dumps(doc)  # the forged write never reached the shadow
            assert service.stats.received == received_before + 1  # door-2's own face only, not the forgery
            # door-2 saw only its own topics (its answer, and its own uplink echoed by "#"): nothing of door-1
            assert all(t.startswith(("$aws/things/door-2/", "facewatchd/door-2/")) for t, _ in spy.received)
            assert not any(b"door-1" in p for _, p in spy.received)
            assert daemon.recognizer.cache.persons() == {obama: "Barack Obama"}  # type: ignore[union-attr]
            log = (acl_broker.workdir / "mosquitto.log").read_text()
            assert "Denied PUBLISH from door-2" in log
            assert "already connected, closing old connection" not in log  # nobody's session was taken
        finally:
            daemon.request_stop()
            await asyncio.wait_for(device, 60)


async def test_without_a_certificate_nobody_connects(acl_broker: Mosquitto, pki: TestPki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(HOST, acl_broker.port, identifier="anyone", tls_context=context,
                                  timeout=5):
            pass


async def test_the_link_and_the_plugins_on_one_device_certificate_share_one_connection(
        acl_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> None:
    """The shipped broker ties the client id to the certificate: a second connection of door-1 would take
    the first one's place. The link, Home Assistant and the door's MQTT backend all use door-1's certificate
    for a whole run (a face named through the shadow, HA announced, the door locked at start and at stop)
    on one connection that is never knocked off."""
    server = ResolverServiceConfig(host=acl_broker.host, port=acl_broker.port, ca_file=pki.ca_file,
                                   cert_file=pki.client("facewatchd-resolver").cert,
                                   key_file=pki.client("facewatchd-resolver").key,
                                   shadow_cert_file=pki.client("facewatchd-shadow").cert,
                                   shadow_key_file=pki.client("facewatchd-shadow").key, **FAST)
    door1 = pki.client("door-1")
    broker = {"host": acl_broker.host, "port": acl_broker.port, "ca_file": str(pki.ca_file),
              "cert_file": str(door1.cert), "key_file": str(door1.key), **FAST}
    log_file = acl_broker.workdir / "mosquitto.log"

    def published(topic: str) -> bool:
        return f"Received PUBLISH from door-1 " in log_file.read_text() and f"'{topic}'" in log_file.read_text()

    async with ResolverService(server, tmp_path / "server") as service:
        await service.ready(timeout=15)
        obama = await enroll(service, "Barack Obama", FIXTURES / "obama.jpg")
        frames = write_frames(tmp_path / "frames", face_crops(FIXTURES / "obama1.jpg", 1), lambda i: 0)
        config = make_config(
            tmp_path / "door-1", frames, device={"thing": "door-1"}, link={"type": "mqtt", **broker},
            cameras=[{"id": "front", "source": str(frames), "loop": True, "fps": 4, "pace": "realtime"}],
            plugins={"homeassistant": broker,
                     "door": {"backend": {"type": "mqtt", "command_topic": "facewatchd/door-1/door/set", **broker}}})
        host = PluginHost(config)
        host.load()
        daemon = Daemon(config, host)
        device = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.recognizer is not None
                             and daemon.recognizer.cache.persons() == {obama: "Barack Obama"}, 60,
                             "door-1 to be answered through its shadow")
            await eventually(lambda: published("facewatchd/door-1/homeassistant/availability")
                             and published("facewatchd/door-1/door/set"), 20, "HA and the door to publish")
        finally:
            daemon.request_stop()
            summary = await asyncio.wait_for(device, 60)
    log = log_file.read_text()
    connects = [line for line in log.splitlines() if "New client connected" in line and "u'door-1'" in line]
    assert len(connects) == 1, connects
    assert "already connected, closing old connection" not in log
    assert summary.resolver_calls == 1 and summary.link_online
    assert log.count("'facewatchd/door-1/door/set'") >= 2, "locked at start and at stop, on the shared connection"
