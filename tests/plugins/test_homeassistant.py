"""Home Assistant over MQTT discovery, seen as HA sees it: a subscriber on a real mosquitto while the
real daemon recognises real photos; HA's birth message re-publishes; forgetting removes the entity."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from facewatchd.app.device import Daemon
from facewatchd.plugins import PluginHost
from facewatchd.web.config import WebConfig
from plugins.homeassistant import HomeAssistantConfig, Plugin
from plugins.homeassistant.config import review_page_url
from tests.plugins.conftest import Enrolled
from tests.plugins.support import MqttRecorder, eventually, frames_dir, read_retained, run_in_loop
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)
OBAMA = "Barack Obama"
NODE = "facewatchd_facewatchd-demo"
BASE = "facewatchd/facewatchd-demo"
CONFIG_TOPIC = re.compile(r"^homeassistant/(\w+)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")

# What HA's MQTT platforms require (homeassistant/components/mqtt/*.py: the discovery schemas), each
# inner tuple "one of these"; and what every entity here needs to land in the device registry.
REQUIRED = {
    "sensor": [("state_topic",)],
    "binary_sensor": [("state_topic",)],
    "event": [("state_topic",), ("event_types",)],
    "image": [("image_topic", "url_topic")],
    "device_tracker": [("state_topic", "json_attributes_topic")],
}


def check_discovery(topic: str, payload: bytes) -> tuple[str, dict[str, Any]]:
    match = CONFIG_TOPIC.match(topic)
    assert match, f"not a discovery topic HA reads: {topic}"
    component = match.group(1)
    config = json.loads(payload)
    for keys in REQUIRED[component]:
        assert any(k in config for k in keys), f"{topic}: needs one of {keys}: {config}"
    assert config["unique_id"] and (config["name"] or device_name(config)), config
    # every entity but a person's "Last camera" (true still while the daemon is stopped) says when it is away
    assert config.get("availability_topic") or config.get("availability") or topic.endswith("_camera/config"), config
    device = config["device"]
    assert device["identifiers"] and all(isinstance(i, str) for i in device["identifiers"]), device
    assert {"name", "model", "manufacturer", "sw_version"} <= set(device), device
    if component == "image":
        assert ("image_topic" in config) != ("url_topic" in config)  # HA: exactly one
    if component == "event":
        assert config["event_types"] == ["recognised", "unknown", "presentation_attack"]
    if component == "binary_sensor":
        assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    if component == "device_tracker":
        assert (config["payload_home"], config["payload_not_home"]) == ("home", "not_home")
    for key in ("state_topic", "json_attributes_topic", "image_topic", "availability_topic"):
        if key in config:
            assert "+" not in config[key] and "#" not in config[key]
    for availability in config.get("availability", []):
        assert "+" not in availability["topic"] and "#" not in availability["topic"]
    return component, config


def device_name(config: dict[str, Any]) -> str:
    return str(config["device"]["name"])  # an entity named null takes its device's name (a person's tracker)


def configs(recorder: MqttRecorder, since: int = 0) -> dict[str, bytes]:
    return {t: p for t, p, _ in recorder.messages[since:] if t.startswith("homeassistant/") and t.endswith("/config")}


async def test_discovery_states_birth_message_and_forget(tmp_path: Path, enrolled: Enrolled, broker: Mosquitto):
    strangers = frames_dir(tmp_path / "yard", (enrolled.stranger, 4))
    config = make_config(
        enrolled.state(tmp_path), cameras=[
            {"id": "front", "source": str(FIXTURES / "obama2.jpg"), "loop": True, "pace": "realtime", "fps": 5},
            {"id": "yard", "source": str(strangers)}],
        plugins={"homeassistant": {"host": broker.host, "port": broker.port, "unknown_off_after_s": 0.3,
                                   "publish_face_crops": True, "reconnect_min_s": 0.1}})
    obama = enrolled.person_id(OBAMA)
    tracker_topic = f"homeassistant/device_tracker/{NODE}/person_{obama}/config"
    expected = {f"homeassistant/{c}/{NODE}/{cam}_{o}/config" for cam in ("front", "yard")
                for c, o in (("sensor", "last_person"), ("binary_sensor", "unknown_person"),
                             ("event", "person_recognised"), ("image", "last_face"))} | {tracker_topic}

    async with MqttRecorder(broker, "homeassistant/#", "facewatchd/#") as ha:
        async def scenario(daemon: Daemon) -> None:
            await eventually(lambda: expected <= set(configs(ha)), what="discovery for both cameras and Obama")
            await eventually(lambda: ha.last(f"{BASE}/front/last_person") == OBAMA.encode(), what="last person")
            await eventually(lambda: ha.on(f"{BASE}/yard/unknown_person")[-2:] == [b"ON", b"OFF"],
                             what="unknown person on, then off after the stranger left")
            await eventually(lambda: json.loads(ha.last(f"{BASE}/persons/{obama}/attributes") or b"{}").get("presence")
                             == "home", what="presence")
            for topic, payload in configs(ha).items():
                check_discovery(topic, payload)
            assert ha.last(f"{BASE}/homeassistant/availability") == b"online"
            event = json.loads(ha.on(f"{BASE}/front/recognised")[0])
            assert event["event_type"] == "recognised" and event["person"] == OBAMA and event["person_id"] == obama
            attributes = json.loads(ha.last(f"{BASE}/persons/{obama}/attributes") or b"{}")
            assert attributes["last_camera"] == "front" and attributes["in_zones"] == ["home"]
            assert json.loads(ha.last(f"{BASE}/front/last_person/attributes") or b"{}")["similarity"] >= 0.363
            assert (ha.last(f"{BASE}/front/face") or b"")[:2] == b"\xff\xd8"  # a JPEG crop, opted in

            # HA restarts: its birth message makes us send every config (and state) again
            mark = len(ha.messages)
            await ha.publish("homeassistant/status", b"online")
            await eventually(lambda: expected <= set(configs(ha, since=mark)), what="discovery re-published")
            await eventually(lambda: ha.last(f"{BASE}/front/last_person") == OBAMA.encode() and
                             len([m for m in ha.messages[mark:] if m[0] == f"{BASE}/front/last_person"]) >= 1,
                             what="states re-published")

            # the operator renames him: the tracker keeps its unique_id and gets the new name
            mark = len(ha.messages)
            await daemon._embedded.resolver.label(obama, "Barack H. Obama")
            await eventually(lambda: configs(ha, since=mark).get(tracker_topic) and device_name(json.loads(
                configs(ha, since=mark)[tracker_topic])) == "Barack H. Obama", what="tracker renamed")
            await eventually(lambda: ha.last(f"{BASE}/front/last_person") == b"Barack H. Obama", what="sensor renamed")
            assert json.loads(configs(ha)[tracker_topic])["unique_id"] == f"{NODE}_person_{obama}"

            # the operator forgets him: the resolver tells the device, the device tells HA
            mark = len(ha.messages)
            await daemon._embedded.resolver.forget(obama)
            await eventually(lambda: configs(ha, since=mark).get(tracker_topic) == b"", what="empty retained config")
            await eventually(lambda: ha.last(f"{BASE}/front/last_person") == b"", what="name cleared")
            assert ha.last(f"{BASE}/persons/{obama}/attributes") == b""

        await run_in_loop(config, loaded_host(config), until=scenario)
        await eventually(lambda: ha.last(f"{BASE}/homeassistant/availability") == b"offline", what="offline")

    retained = await read_retained(broker, "homeassistant/#")  # what a restarted HA would find
    assert f"homeassistant/sensor/{NODE}/front_last_person/config" in retained
    assert tracker_topic not in retained


def loaded_host(config: Any) -> PluginHost:
    host = PluginHost(config)
    host.load()
    return host


def test_face_crops_are_off_by_default_and_their_entity_removed():
    plugin = Plugin()
    plugin.config, plugin.thing = HomeAssistantConfig(), "door-1"
    entities = plugin.camera_configs("front")
    assert entities["homeassistant/image/facewatchd_door-1/front_last_face/config"] is None  # empty config
    assert sum(v is not None for v in entities.values()) == 4


async def test_a_forget_before_the_broker_is_reached_is_sent_at_connect(tmp_path: Path) -> None:
    """A forget applied at start, before the plugin has connected (or while the broker is away), must still
    remove the person's retained entity: it is owed, and sent at the next connect."""
    from tests.support.broker import free_port

    port = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    persistent = (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                  f"persistence_location {workdir}/\nautosave_interval 1\n" + ("user root\n" if os.geteuid() == 0
                                                                               else ""))
    config = make_config(tmp_path / "state", cameras=[{"id": "front", "source": str(FIXTURES / "obama.jpg")}],
                         plugins={"homeassistant": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1,
                                                    "reconnect_max_s": 0.3}})
    tracker_topic = f"homeassistant/device_tracker/{NODE}/person_person-alice/config"
    with Mosquitto(workdir, port=port, config=persistent) as broker:
        first = loaded_host(config)  # a first run names Alice: her tracker is retained on the broker
        await first.start()
        first.fire("person_labelled", person_id="person-alice", name="Alice", previous=None)
        await eventually_retained(broker, tracker_topic)
        await first.stop()
        await asyncio.to_thread(broker.stop)

        second = loaded_host(config)  # the next run starts while the broker is away, and Alice is forgotten
        await second.start()
        second.fire("person_labelled", person_id="person-alice", name=None, previous="Alice")
        await second.drain()
        await asyncio.to_thread(broker.start)  # the broker comes back: the plugin connects and owes a removal
        deadline = asyncio.get_running_loop().time() + 20
        while tracker_topic in await read_retained(broker, "homeassistant/#"):
            assert asyncio.get_running_loop().time() < deadline, "the owed removal never reached the broker"
        await second.stop()


async def eventually_retained(broker: Mosquitto, topic: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while topic not in await read_retained(broker, topic):
        assert asyncio.get_running_loop().time() < deadline, f"{topic} was never retained"


async def test_a_face_not_worth_naming_is_an_unknown_person_until_it_is_recognised(
        tmp_path: Path, enrolled: Enrolled, broker: Mosquitto) -> None:
    """Out of focus, Obama's face is neither named (0.41 to his template) nor worth naming (the gate keeps it
    back): someone unknown is present. The camera focuses, he is recognised in the same track, and "Unknown
    person present" turns off at once (not after he leaves)."""
    import cv2

    photo = cv2.imread(str(FIXTURES / "obama2.jpg"))
    focusing = []  # px of blur on the 112 px face SFace sees: it comes into focus slowly, in one track
    for i, blur in enumerate([5.0] * 8 + [4.5, 2.5, 1.0]):
        focusing.append(tmp_path / f"focus-{i:02d}.jpg")
        cv2.imwrite(str(focusing[-1]), cv2.GaussianBlur(photo, (0, 0), blur * 405 / 112))
    frames = frames_dir(tmp_path / "door", *((frame, 1) for frame in focusing), (FIXTURES / "obama2.jpg", 30))
    config = make_config(
        enrolled.state(tmp_path), cameras=[{"id": "door", "source": str(frames), "pace": "realtime", "fps": 10}],
        tracker={"scene_cut_threshold": 1.0},  # blurring the whole photo moves its colours like a cut would
        plugins={"homeassistant": {"host": broker.host, "port": broker.port, "unknown_off_after_s": 600,
                                   "reconnect_min_s": 0.1}})
    async with MqttRecorder(broker, "facewatchd/#") as ha:
        async def scenario(daemon: Daemon) -> None:
            await eventually(lambda: ha.last(f"{BASE}/door/last_person") == OBAMA.encode(), what="recognised")
            states = lambda: ha.on(f"{BASE}/door/unknown_person")  # noqa: E731
            await eventually(lambda: b"ON" in states() and states()[-1] == b"OFF",
                             what="unknown while out of focus, off once recognised")
            assert b"2" not in ha.on(f"{BASE}/door/people")  # one face, one track throughout

        await run_in_loop(config, loaded_host(config), until=scenario)


@pytest.mark.parametrize(("web", "expected"), [
    ({"host": "127.0.0.1"}, None), ({"host": "localhost"}, None), ({"host": "::1"}, None),
    ({"host": "0.0.0.0", "port": 0}, None),  # a port chosen at start: not known here
    ({"host": "0.0.0.0"}, f"http://{socket.gethostname()}:8750/"),
    ({"host": "::", "hostnames": ["door.example.net"]}, "http://door.example.net:8750/"),
    ({"host": "fe80::1"}, "http://[fe80::1]:8750/"),
    ({"host": "door.local", "tls_cert_file": "c.pem", "tls_key_file": "k.pem"}, "https://door.local:8750/"),
])
def test_the_review_page_link_is_one_another_machine_can_follow(web: dict[str, Any], expected: str | None) -> None:
    assert review_page_url(WebConfig(**web)) == expected
