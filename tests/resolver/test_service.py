"""The on-prem resolver service against a real mosquitto: answers arrive as shadow deltas, bad input on the
uplink topic is logged and skipped, the thing comes from the topic, devices share one collection."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiomqtt
import cv2
import numpy as np
import pytest
import structlog

from facewatchd.app.config import parse_config
from facewatchd.config import ConfigError
from facewatchd.messages import FaceQuery, new_face_id, uplink_topic
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
from facewatchd.app.resolver_service import service_data_dir
from facewatchd.resolver.mqtt_adapter import ResolverService, ResolverServiceConfig, shadow_service
from facewatchd.shadow.store import ShadowStore
from facewatchd.vision.analyzer import FaceAnalyzer
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES
from tests.support.images import bomb_jpeg

pytestmark = pytest.mark.timeout(60)
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


@pytest.fixture(scope="module")
def faces() -> dict[str, tuple[bytes, np.ndarray]]:
    """Face crop (as a device sends it) and SFace embedding of real photos."""
    analyzer = FaceAnalyzer()
    out = {}
    for name in ("obama1", "obama2", "biden"):
        image = cv2.imread(str(FIXTURES / f"{name}.jpg"))
        face = analyzer.largest(image)
        assert face is not None
        out[name] = (face_crop_jpeg(image, face.face, UplinkConfig()), face.embedding)
    return out


def query(face: tuple[bytes, np.ndarray], thing: str = "cam-1", embedding: bool = True) -> FaceQuery:
    crop, emb = face
    return FaceQuery(new_face_id(), thing, "door", "t-1", crop, emb if embedding else None, ts=1.0)


async def eventually(check: Any, timeout: float = 10.0) -> None:
    """Wait for `check()`: the delta leaves the service before it counts the message as resolved."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def server_config(broker: Mosquitto, **extra: Any) -> ResolverServiceConfig:
    return ResolverServiceConfig(host=broker.host, port=broker.port, **{**FAST, **extra})


@pytest.fixture
async def service(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[ResolverService]:
    async with ResolverService(server_config(broker), tmp_path / "server") as svc:
        await svc.ready(timeout=10)
        yield svc


class Device:
    """What a device sees: a client that publishes uplink messages and reads its shadow's deltas."""

    def __init__(self, client: aiomqtt.Client, things: tuple[str, ...]) -> None:
        self.client = client
        self.things = things
        self.labels: dict[str, dict[str, Any]] = {}  # face id → label, from /update/delta
        self.delta_things: dict[str, str] = {}  # face id → the thing whose delta carried it

    async def publish(self, thing_or_topic: str, payload: bytes | str) -> None:
        topic = thing_or_topic if "/" in thing_or_topic else uplink_topic(thing_or_topic)
        await self.client.publish(topic, payload, qos=1)

    async def label(self, face_id: str, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while face_id not in self.labels:
                message = await anext(aiter(self.client.messages))
                state = json.loads(message.payload)["state"]
                for fid, label in state.get("faces", {}).items():
                    self.labels[fid] = label
                    self.delta_things[fid] = str(message.topic).split("/")[2]
        return self.labels[face_id]


@pytest.fixture
async def device(broker: Mosquitto) -> AsyncIterator[Device]:
    async with aiomqtt.Client(broker.host, broker.port, identifier="device") as client:
        things = ("cam-1", "cam-2")
        for thing in things:
            await client.subscribe(f"$aws/things/{thing}/shadow/update/delta", qos=1)
        yield Device(client, things)


async def test_bad_input_is_logged_and_skipped_and_a_valid_face_is_still_resolved(
        service: ResolverService, device: Device, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    good = json.loads(query(faces["obama1"]).to_json())

    def variant(**changes: Any) -> bytes:
        body = {**good, "face_id": new_face_id(), **changes}
        return json.dumps({k: v for k, v in body.items() if v is not None}).encode()

    blank = cv2.imencode(".jpg", np.full((160, 160, 3), 127, np.uint8))[1].tobytes()
    bad = [
        ("cam-1", b"{oops", "not_json"),
        ("cam-1", b"\xff\xfe\x00garbage", "not_json"),
        ("cam-1", b"[1, 2]", "schema"),
        ("cam-1", variant(face_id="not-a-uuid"), "schema"),
        ("cam-1", variant(camera=None), "schema"),
        ("cam-1", variant(embedding="AAAA"), "schema"),
        ("cam-1", variant(crop=base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"x" * 100).decode()), "not_jpeg"),
        ("cam-1", variant(crop=base64.b64encode(b"\xff\xd8" + b"\x00" * 500).decode()), "bad_image"),
        # a decompression bomb: 600 bytes that claim 30000x30000 pixels, refused before decoding
        ("cam-1", variant(crop=base64.b64encode(bomb_jpeg()).decode()), "bad_image"),
        ("cam-1", b"[" * 5000, "not_json"),  # deeper than json can recurse
        ("cam-1", b'{"face_id": ' + b"[" * 5000, "not_json"),
        ("cam-1", variant(ts=float("nan")), "not_json"),  # NaN is Python's, not JSON
        ("cam-1", variant(ts=1e300), "schema"),
        ("cam-1", variant(crop=base64.b64encode(b"\xff\xd8" + b"\x00" * (97 * 1024)).decode()), "too_large"),
        ("cam-1", b"{" + b" " * (129 * 1024) + b"}", "too_large"),
        ("facewatchd/bad thing!/faces/unknown", variant(), "topic"),
        # a real JPEG without a face and without an embedding: the service looks for a face itself
        ("cam-1", variant(crop=base64.b64encode(blank).decode(), embedding=None), "no_face"),
    ]
    with structlog.testing.capture_logs() as logs:
        for thing, payload, _ in bad:
            await device.publish(thing, payload)
        valid = query(faces["obama1"], embedding=False)  # no embedding: the service embeds the crop
        await device.publish("cam-1", valid.to_json())
        label = await device.label(valid.face_id)
        await eventually(lambda: service.stats.resolved == 1)

    assert label["person_id"].startswith("person-") and "name" not in label
    expected: dict[str, int] = {}
    for *_, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(service.stats.skipped) == expected
    assert service.stats.resolved == 1 and service.stats.failed == 0
    skipped = [e for e in logs if e["event"] == "uplink_skipped"]
    assert sorted(e["reason"] for e in skipped) == sorted(r for *_, r in bad)
    assert all(e["log_level"] == "warning" and e["error"] for e in skipped)
    assert await service.stores.collection.count() == 1  # nothing but the valid face was stored
    # a face that can never be resolved is answered with the reason, so its device stops resending it
    refused = [json.loads(p)["face_id"] for thing, p, reason in bad if reason in ("bad_image", "no_face")]
    for face_id in refused:
        answer = await device.label(face_id)
        assert set(answer) == {"unresolvable"} and answer["unresolvable"].split(":")[0] in ("bad_image", "no_face")


async def test_thing_is_taken_from_the_topic_never_the_payload(
        service: ResolverService, device: Device, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    q = query(faces["obama1"], thing="cam-evil")
    await device.publish("cam-1", q.to_json())
    await device.label(q.face_id)
    assert device.delta_things[q.face_id] == "cam-1"
    person = await service.stores.names.get(device.labels[q.face_id]["person_id"])
    assert person is not None and person.things == ["cam-1"]


async def test_redelivered_face_is_indexed_once_and_answered_again(
        service: ResolverService, device: Device, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    q = query(faces["biden"])
    for _ in range(3):
        await device.publish("cam-1", q.to_json())
    await device.label(q.face_id)
    await eventually(lambda: service.stats.resolved == 3)
    assert service.resolver.stats.duplicates == 2
    assert service.stores.collection.indexed == 1 and await service.stores.collection.count() == 1


async def test_devices_share_one_collection(
        service: ResolverService, device: Device, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    first, second, other = query(faces["obama1"], "cam-1"), query(faces["obama2"], "cam-2"), query(faces["biden"],
                                                                                                  "cam-2")
    for q in (first, second, other):
        await device.publish(q.thing, q.to_json())
    a, b, c = [await device.label(q.face_id) for q in (first, second, other)]
    assert a["person_id"] == b["person_id"] != c["person_id"]  # Obama on two devices is one person
    assert b["similarity"] > 0.363
    assert (device.delta_things[first.face_id], device.delta_things[second.face_id]) == ("cam-1", "cam-2")
    person = await service.stores.names.get(a["person_id"])
    assert person is not None and person.things == ["cam-1", "cam-2"]
    # a name set once reaches every device that holds the person, as a delta on each shadow
    await service.resolver.label(a["person_id"], "Barack Obama")
    renames: dict[str, Any] = {}
    async with asyncio.timeout(10):
        async for message in device.client.messages:
            state = json.loads(message.payload)["state"]
            if "persons" in state:
                renames[str(message.topic).split("/")[2]] = state["persons"]
            if len(renames) == 2:
                break
    assert renames == {t: {a["person_id"]: {"name": "Barack Obama"}} for t in ("cam-1", "cam-2")}


async def test_with_a_separate_shadow_service_answers_go_as_shadow_updates(
        broker: Mosquitto, device: Device, tmp_path: Path, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    """run_shadow_service = false: `facewatchd resolver` and `facewatchd shadow` as two processes."""
    config = server_config(broker, run_shadow_service=False)
    with ShadowStore(tmp_path / "shadows.db") as store:
        async with shadow_service(config, store) as shadow, ResolverService(config, tmp_path / "server") as svc:
            await shadow.ready(timeout=10)
            await svc.ready(timeout=10)
            assert svc.shadow is None
            q = query(faces["obama2"])
            await device.publish("cam-1", q.to_json())
            label = await device.label(q.face_id)
            doc = await shadow.get("cam-1")
    assert doc is not None and doc["state"]["desired"]["faces"][q.face_id] == label


async def test_broker_restart_reconnects_and_resolves_again(
        broker: Mosquitto, service: ResolverService, faces: dict[str, tuple[bytes, np.ndarray]]) -> None:
    await asyncio.to_thread(broker.stop)
    await eventually(lambda: not service.connected)
    assert "disconnected" in service.status()
    await asyncio.to_thread(broker.start)
    await service.ready(timeout=15)
    async with aiomqtt.Client(broker.host, broker.port, identifier="device") as client:
        await client.subscribe("$aws/things/cam-1/shadow/update/delta", qos=1)
        dev = Device(client, ("cam-1",))
        q = query(faces["obama1"])
        await dev.publish("cam-1", q.to_json())
        assert (await dev.label(q.face_id))["person_id"]


def test_server_table_in_config_is_strict(tmp_path: Path) -> None:
    config = parse_config({"device": {"state_dir": str(tmp_path)},
                           "server": {"host": "broker.lan", "port": 8883, "ca_file": "ca.pem"}})
    assert config.server is not None and config.server.use_tls and config.server.run_shadow_service
    assert service_data_dir(config) == tmp_path / "resolver"  # shared with `facewatchd faces`
    with pytest.raises(ConfigError, match=r"server\.colour: unknown key"):
        parse_config({"server": {"colour": "red"}})
    with pytest.raises(ConfigError, match="key_file is set but cert_file is not"):
        parse_config({"server": {"key_file": "k.pem"}})
    with pytest.raises(ConfigError, match="server.port"):
        parse_config({"server": {"port": 0}})
    assert parse_config({}).server is None
