"""MqttLink against a real mosquitto and our ShadowService: uplink, deltas, outages, bad input, bad certificates."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiomqtt
import numpy as np
import pytest

from facewatchd.link.base import Link, LinkDown
from facewatchd.link.mqtt import LinkAuthError, MqttLink, MqttLinkConfig
from facewatchd.messages import FaceQuery, MessageError, new_face_id, uplink_topic
from facewatchd.shadow.service import ShadowService
from facewatchd.shadow.store import ShadowStore
from tests.support.broker import Mosquitto, free_port
from tests.support.tls import TestPki

pytestmark = pytest.mark.timeout(60)
THING = "cam-1"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


def config(broker: Mosquitto, **extra: Any) -> MqttLinkConfig:
    return MqttLinkConfig(type="mqtt", host=broker.host, port=broker.port, **{**FAST, **extra})


def face_query(crop_bytes: int = 2000) -> FaceQuery:
    crop = b"\xff\xd8" + bytes(range(256)) * (crop_bytes // 256)
    return FaceQuery(new_face_id(), THING, "front", "t-7", crop, np.linspace(-1, 1, 128, dtype=np.float32), ts=12.5)


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def next_delta(link: MqttLink, timeout: float = 10.0) -> dict[str, Any]:
    return await asyncio.wait_for(anext(aiter(link.deltas())), timeout)


async def retained(broker: Mosquitto, topic: str) -> bytes:
    """The retained message on `topic`, read by a fresh subscriber."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"probe-{time.monotonic_ns()}") as probe:
        await probe.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in probe.messages:
                return bytes(message.payload)
    raise AssertionError("unreachable")


@pytest.fixture
async def service(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[ShadowService]:
    with ShadowStore(tmp_path / "shadows.db") as store:
        async with ShadowService(store, broker.host, broker.port, **FAST) as svc:
            await svc.ready(timeout=10)
            yield svc


@pytest.fixture
async def link(broker: Mosquitto) -> AsyncIterator[MqttLink]:
    async with MqttLink(THING, config(broker)) as lk:
        await lk.wait_online(timeout=10)
        yield lk


async def test_send_query_arrives_on_the_uplink_topic(broker: Mosquitto, link: MqttLink) -> None:
    assert isinstance(link, Link) and link.online
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"online"
    query = face_query()
    async with aiomqtt.Client(broker.host, broker.port, identifier="resolver") as resolver:
        await resolver.subscribe(uplink_topic(THING), qos=1)
        await link.send_query(query)
        async with asyncio.timeout(5):
            message = await anext(aiter(resolver.messages))
    assert message.qos == 1
    got = FaceQuery.from_json(message.payload, thing=THING)
    assert (got.face_id, got.camera, got.track, got.crop_jpeg, got.ts) == (
        query.face_id, "front", "t-7", query.crop_jpeg, 12.5)
    assert np.array_equal(got.embedding, query.embedding)


async def test_service_delta_reaches_deltas_and_update_shadow_reports(
        service: ShadowService, link: MqttLink) -> None:
    await eventually(lambda: link.online)
    await service.update(THING, {"state": {"desired": {"faces": {"f1": {"name": "Ann"}}}}})
    assert await next_delta(link) == {"faces": {"f1": {"name": "Ann"}}}

    await link.update_shadow({"reported": {"faces": {"f1": {"name": "Ann"}}}, "desired": {"faces": {"f1": None}}})

    doc = None
    for _ in range(250):  # the update travels device -> broker -> service
        doc = await service.get(THING)
        if doc and doc["state"].get("reported"):
            break
        await asyncio.sleep(0.02)
    assert doc is not None
    assert doc["state"]["reported"] == {"faces": {"f1": {"name": "Ann"}}}
    assert "desired" not in doc["state"] and doc["version"] == 2


async def test_outage_reconnects_and_recovers_the_missed_delta_with_get(
        broker: Mosquitto, service: ShadowService, link: MqttLink) -> None:
    deltas = link.deltas()
    await asyncio.to_thread(broker.stop)
    await eventually(lambda: not link.online, what="link offline")
    with pytest.raises(LinkDown):
        await link.send_query(face_query())

    # the resolver labels a face while the device is cut off: stored, not delivered
    await service.update(THING, {"state": {"desired": {"faces": {"f2": {"name": "Bob"}}}}})

    await asyncio.to_thread(broker.start)
    await link.wait_online(timeout=15)
    state = await asyncio.wait_for(anext(deltas), 15)
    assert state == {"faces": {"f2": {"name": "Bob"}}}  # from get/accepted's state.delta
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"online"
    await link.send_query(face_query())  # usable again
    # and subscribed again: a label sent after the reconnect arrives as a delta, not only through the get
    await service.update(THING, {"state": {"desired": {"faces": {"f3": {"name": "Cy"}}}}})
    assert (await asyncio.wait_for(anext(deltas), 15))["faces"]["f3"] == {"name": "Cy"}


async def test_clean_close_leaves_offline_retained(broker: Mosquitto) -> None:
    async with MqttLink(THING, config(broker)) as lk:
        await lk.wait_online(timeout=10)
    assert not lk.online
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"offline"


_DEVICE = """
import asyncio, sys
from facewatchd.link.mqtt import MqttLink, MqttLinkConfig

async def main() -> None:
    cfg = MqttLinkConfig(type="mqtt", host=sys.argv[1], port=int(sys.argv[2]))
    async with MqttLink(sys.argv[3], cfg) as link:
        await link.wait_online(timeout=10)
        print("online", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_will_says_offline_when_the_device_dies(broker: Mosquitto) -> None:
    """A device process killed with SIGKILL sends no DISCONNECT: the broker publishes the retained will."""
    device = await asyncio.create_subprocess_exec(sys.executable, "-c", _DEVICE, broker.host, str(broker.port),
                                                  THING, stdout=asyncio.subprocess.PIPE)
    try:
        assert device.stdout is not None
        async with asyncio.timeout(20):
            while (line := await device.stdout.readline()) != b"online\n":
                assert line, "the device process exited"
        assert await retained(broker, f"facewatchd/{THING}/availability") == b"online"
    finally:
        device.kill()
        await device.wait()
    for _ in range(100):  # the broker notices the closed socket at once
        if await retained(broker, f"facewatchd/{THING}/availability") == b"offline":
            break
        await asyncio.sleep(0.05)
    assert await retained(broker, f"facewatchd/{THING}/availability") == b"offline"


async def test_malformed_and_wrong_schema_deltas_are_skipped(broker: Mosquitto, link: MqttLink) -> None:
    topic = f"$aws/things/{THING}/shadow/update/delta"
    deltas = link.deltas()
    async with aiomqtt.Client(broker.host, broker.port, identifier="rogue") as rogue:
        for payload in (b"{oops", b"\xff\xfe", b"[]", json.dumps({"state": 7}), json.dumps({"version": 3}),
                        json.dumps({"state": {"ok": 1}, "version": 9})):
            await rogue.publish(topic, payload, qos=1)
    assert await asyncio.wait_for(anext(deltas), 10) == {"ok": 1}
    assert link.online


async def test_payloads_over_128_kb_are_refused(link: MqttLink) -> None:
    with pytest.raises(MessageError, match="over the 131072-byte"):
        await link.send_query(face_query(crop_bytes=100 * 1024))
    with pytest.raises(MessageError, match="131072"):
        await link.update_shadow({"reported": {"blob": "x" * (130 * 1024)}})
    await link.send_query(face_query())  # the link is fine


async def test_offline_link_raises_link_down_naming_the_cause() -> None:
    cfg = MqttLinkConfig(type="mqtt", host="127.0.0.1", port=free_port(), **FAST)
    async with MqttLink(THING, cfg) as lk:
        with pytest.raises(LinkDown, match="not connected") as e:
            await lk.wait_online(timeout=1)
        assert not isinstance(e.value, LinkAuthError)
        assert "refused" in str(e.value).lower()
        with pytest.raises(LinkDown):
            await lk.send_query(face_query())


async def test_mutual_tls_with_a_good_certificate(tls_broker: Mosquitto, pki: TestPki) -> None:
    cert = pki.client(THING)
    cfg = config(tls_broker, ca_file=pki.ca_file, cert_file=cert.cert, key_file=cert.key)
    assert cfg.use_tls
    async with MqttLink(THING, cfg) as lk:
        await lk.wait_online(timeout=10)
        await lk.send_query(face_query())


@pytest.mark.parametrize("problem", ["untrusted client certificate", "no client certificate", "untrusted broker"])
async def test_wrong_certificates_fail_fast_with_the_cause(tls_broker: Mosquitto, pki: TestPki, problem: str) -> None:
    good = pki.client(THING)
    settings: dict[str, Any] = {"ca_file": pki.ca_file, "cert_file": good.cert, "key_file": good.key}
    if problem == "untrusted client certificate":
        bad = pki.untrusted_client(THING)
        settings.update(cert_file=bad.cert, key_file=bad.key)
        expected = "client certificate"
    elif problem == "no client certificate":
        settings.update(cert_file=None, key_file=None)
        expected = "certificate"
    else:
        settings.update(ca_file=pki.rogue.ca_file)
        expected = "not trusted by ca_file"
    async with MqttLink(THING, config(tls_broker, tls=True, **settings)) as lk:
        started = time.monotonic()
        with pytest.raises(LinkAuthError) as e:
            await lk.wait_online(timeout=20)
        assert time.monotonic() - started < 5, "a refused certificate must not look like a slow broker"
    message = str(e.value)
    assert expected in message and f"{tls_broker.host}:{tls_broker.port}" in message
    assert "ssl" in message.lower()  # the underlying TLS error is kept


def test_config_is_strict() -> None:
    with pytest.raises(ValueError):
        MqttLinkConfig(type="mqtt", host="h", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        MqttLinkConfig(type="mqtt", host="h", key_file=Path("k.pem"))
    with pytest.raises(ValueError):
        MqttLinkConfig(type="mqtt", host="h", reconnect_min_s=5, reconnect_max_s=1)
    cfg = MqttLinkConfig(type="mqtt", host="h", password="s3cret", username="u")
    assert "s3cret" not in repr(cfg) and cfg.port == 1883 and not cfg.use_tls
    assert MqttLink(THING, cfg).client_id == THING
