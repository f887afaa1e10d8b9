"""The Home Assistant plugin against a real Home Assistant (tests/support/homeassistant.py): one HA for the
session (the `ha` fixture, conftest.py), onboarded, with an MQTT config entry on its own mosquitto. Each test is one facewatchd thing (its
own node, so tests do not see each other's entities) whose plugin is fed hook calls, and reads what HA made
of them: entity and device registries over the websocket API, states over REST. One test per item of
issue 13, and one for the extras (people in view, unknown event, area, review page link, names)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from facewatchd.plugins import PluginHost
from tests.plugins.conftest import Enrolled
from tests.plugins.ha_support import (Ha, TcpProxy, config_for, ended, face, listening, node, running, state_of,
                                      until)
from tests.plugins.support import read_retained, run_in_loop
from tests.support.broker import HOST
from tests.support.daemon import FIXTURES, make_config
from tests.support.homeassistant import HaClient

pytestmark = pytest.mark.timeout(120)


# -- item 1: a forget applied before the plugin connected ----------------------------------------
async def test_a_forget_before_connecting_removes_the_tracker_from_ha(tmp_path: Path, ha: Ha, client: HaClient):
    thing, proxy = "ha-forget", TcpProxy(ha.broker.port)
    await proxy.open()
    config = config_for(tmp_path, thing, proxy.port)
    tracker = f"{node(thing)}_person_person-alice"
    async with running(config) as first:  # a first run sees Alice: HA has her tracker, home
        first.fire("face_recognised", event=face("front", "t1", "person-alice", "Alice"))
        await state_of(client, tracker, "home")
    await proxy.close()  # the next run starts with the broker out of reach, and Alice is forgotten at once
    async with running(config) as second:
        second.fire("person_labelled", person_id="person-alice", name=None, previous="Alice")
        await second.drain()
        await proxy.open()
        await until(lambda: _gone(client, tracker), "Alice's tracker to leave HA's entity registry")
    await proxy.close()


async def _gone(client: HaClient, unique_id: str) -> bool:
    return await client.entity(unique_id) is None


# -- item 2: home when the daemon stopped ---------------------------------------------------------
async def test_a_person_home_at_stop_is_not_home_after_a_restart(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-restart"
    config = config_for(tmp_path, thing, ha.broker.port)
    tracker = f"{node(thing)}_person_person-bob"
    async with running(config) as first:
        first.fire("face_recognised", event=face("front", "t1", "person-bob", "Bob"))  # in view at stop
        await state_of(client, tracker, "home")
    await state_of(client, tracker, "not_home")  # a clean stop: nobody is seen any more (issue 24, item 11)
    async with running(config):  # a new process has not seen Bob: he is not home, and still known
        state = await state_of(client, tracker, "not_home")
        assert state["attributes"]["last_camera"] == "front" and state["attributes"]["person_id"] == "person-bob"
        assert state["attributes"]["friendly_name"] == "Bob"  # the person's own device's name, no prefix
        await state_of(client, f"{tracker}_camera", "Front")  # their "Last camera", by its name


# -- item 3: cameras taken out of the config ------------------------------------------------------
async def test_a_camera_removed_from_the_config_leaves_ha(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-cameras"
    gone = f"{node(thing)}_garage"
    async with running(config_for(tmp_path, thing, ha.broker.port, camera_ids=("front", "yard", "garage"))) as first:
        first.fire("face_recognised", event=face("garage", "t1", "person-carol", "Carol"))
        await state_of(client, f"{gone}_last_person", "Carol")
    async with running(config_for(tmp_path, thing, ha.broker.port, camera_ids=("front", "yard"))):
        await until(lambda: _no_entities(client, gone), "the garage camera's entities to leave HA")
        await until(lambda: _gone_device(client, gone), "the garage camera's device to leave HA")
        assert await read_retained(ha.broker, f"facewatchd/{thing}/garage/#") == {}  # its states and availability
        assert (await client.state(f"{node(thing)}_yard_last_person")) is not None
        assert (await client.state(f"{node(thing)}_front_unknown_person"))["state"] == "off"  # type: ignore[index]


async def test_a_camera_that_stops_delivering_is_unavailable_alone(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-offline"
    async with running(config_for(tmp_path, thing, ha.broker.port, camera_ids=("front", "yard"))) as host:
        await state_of(client, f"{node(thing)}_front_people", "0")
        host.fire("camera_status", camera="front", online=False, reason="source lost, reopening")
        await state_of(client, f"{node(thing)}_front_people", "unavailable")
        assert (await client.state(f"{node(thing)}_yard_people"))["state"] == "0"  # type: ignore[index]
        host.fire("camera_status", camera="front", online=True, reason="frames again")
        await state_of(client, f"{node(thing)}_front_people", "0")


async def _no_entities(client: HaClient, prefix: str) -> bool:
    return not [e for e in await client.entities() if e["platform"] == "mqtt" and e["unique_id"].startswith(prefix)]


async def _gone_device(client: HaClient, identifier: str) -> bool:
    return await client.device(identifier) is None


# -- item 4: the hub device, and via_device ------------------------------------------------------
async def test_cameras_hang_off_the_hub_even_without_person_entities(tmp_path: Path, ha: Ha):
    thing, other = "ha-hub", "ha-hub-persons"
    async with running(config_for(tmp_path, thing, ha.broker.port, camera_ids=("front", "yard"),
                                  person_entities=False)) as host, \
            running(config_for(tmp_path / "other", other, ha.broker.port)) as with_persons:
        host.fire("link_status", online=True, link="local")
        with_persons.fire("person_labelled", person_id="person-gus", name="Gus", previous=None)
        async with HaClient(ha.home) as client:
            await _linked(client, thing, ("front", "yard"))
            await state_of(client, f"{node(thing)}_resolver_link", "on")
            await _tracked(client, other, "person-gus")
            # the user puts the person and the hub in an area
            area = (await client.call("config/area_registry/create", name="Porch"))["area_id"]
            for identifier in (node(thing), f"{node(other)}_person_person-gus"):
                device = await client.device(identifier)
                await client.call("config/device_registry/update", device_id=device["id"], area_id=area)  # type: ignore[index]
        # HA 2024.3 deletes, at start, a device with nothing but device_trackers (discovery then brings it back,
        # without what the user set on it): restart it, and the devices keep their area
        await asyncio.to_thread(ha.home.stop)
        await asyncio.to_thread(ha.home.start)
        async with HaClient(ha.home) as client:
            await _linked(client, thing, ("front", "yard"))
            await _tracked(client, other, "person-gus")
            for identifier in (node(thing), f"{node(other)}_person_person-gus"):
                assert (await client.device(identifier))["area_id"] == area, identifier  # type: ignore[index]


async def _tracked(client: HaClient, thing: str, person_id: str) -> None:
    """The person's tracker sits on the person's own device, which hangs off the hub."""
    async def check() -> bool:
        hub, person = await client.device(node(thing)), await client.device(f"{node(thing)}_person_{person_id}")
        tracker = await client.entity(f"{node(thing)}_person_{person_id}")
        return None not in (hub, person, tracker) and person["via_device_id"] == hub["id"] \
            and tracker["device_id"] == person["id"]  # type: ignore[index]

    await until(check, f"{person_id}'s tracker on their own device, linked to the hub")


async def _linked(client: HaClient, thing: str, cameras: tuple[str, ...]) -> None:
    async def check() -> bool:
        hub = await client.device(node(thing))
        devices = [await client.device(f"{node(thing)}_{c}") for c in cameras]
        return hub is not None and all(d is not None and d["via_device_id"] == hub["id"] for d in devices)

    await until(check, "every camera device linked to the hub through via_device")


# -- item 5: the answer arrives after the track ended ---------------------------------------------
async def test_a_late_answer_fires_the_event_and_the_person_leaves_again(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-late"
    config = config_for(tmp_path, thing, ha.broker.port, away_after_s=2.0)
    tracker = f"{node(thing)}_person_person-dave"
    async with running(config) as host:
        host.fire("person_labelled", person_id="person-dave", name="Dave", previous=None)  # known from before
        await state_of(client, tracker, "not_home")
        await listening(ha, thing)
        host.fire("face_detected", event=face("front", "t1"))
        host.fire("track_ended", event=ended("front", "t1"))  # a short visit: gone before the resolver answers
        await host.drain()
        host.fire("face_recognised", event=face("front", "t1", "person-dave", "Dave"))
        await until(lambda: _event_of(client, thing, "recognised"), "the recognised event")
        event = await client.state(f"{node(thing)}_front_person_recognised")
        assert event is not None and event["attributes"]["person"] == "Dave" and event["attributes"]["late"]
        await state_of(client, tracker, "home")
        await state_of(client, tracker, "not_home")  # away_after_s after the late answer, not never


async def _event_of(client: HaClient, thing: str, event_type: str) -> bool:
    state = await client.state(f"{node(thing)}_front_person_recognised")
    return state is not None and state["attributes"].get("event_type") == event_type


# -- item 6: 'None', restarts, renames, double writes --------------------------------------------
async def test_last_person_is_never_none_and_survives_a_restart(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-last"
    config = config_for(tmp_path, thing, ha.broker.port)
    sensor = f"{node(thing)}_front_last_person"
    async with running(config) as first:
        first.fire("face_recognised", event=face("front", "t1", "person-erin", "Erin"))
        await state_of(client, sensor, "Erin")
    async with running(config) as second:  # a restart does not reset it (automations on it would fire)
        await state_of(client, f"{node(thing)}_front_people", "0")  # the new run is connected and announced
        await state_of(client, sensor, "Erin")
        second.fire("person_labelled", person_id="person-erin", name=None, previous="Erin")
        await state_of(client, sensor, "unknown")  # forgotten: no name at all, never the string 'None'


async def test_a_rename_fires_no_event_and_a_sighting_writes_the_tracker_once(tmp_path: Path, ha: Ha,
                                                                               client: HaClient):
    thing = "ha-rename"
    config = config_for(tmp_path, thing, ha.broker.port)
    tracker, event_entity = f"{node(thing)}_person_person-finn", f"{node(thing)}_front_person_recognised"
    async with running(config) as host:
        host.fire("person_labelled", person_id="person-finn", name="Finn", previous=None)
        await state_of(client, tracker, "not_home")
        tracker_id = (await client.entity(tracker))["entity_id"]  # type: ignore[index]
        await client.subscribe("state_changed")
        await listening(ha, thing)
        host.fire("face_recognised", event=face("front", "t1", "person-finn", "Finn"))
        await state_of(client, tracker, "home")
        fired = (await until(lambda: client.state(event_entity), "the event entity"))["state"]
        await host.drain()
        # a second write, if any, is in HA once a later message through the same connection is: one more
        host.fire("link_status", online=True, link="local")
        await state_of(client, f"{node(thing)}_resolver_link", "on")
        writes = [e for e in client.events if e["data"]["entity_id"] == tracker_id]
        assert len(writes) == 1, [e["data"]["new_state"] for e in writes]

        # the operator renames him while he is in view; the track's next verification carries the new name
        host.fire("person_labelled", person_id="person-finn", name="Finn Jr", previous="Finn")
        host.fire("face_recognised", event=face("front", "t1", "person-finn", "Finn Jr"))
        await until(lambda: _named(client, tracker, "Finn Jr"), "the tracker renamed")
        assert (await client.state(tracker))["state"] == "home"  # type: ignore[index]
        await state_of(client, f"{node(thing)}_front_last_person", "Finn Jr")
        await host.drain()
        assert (await client.state(event_entity))["state"] == fired  # type: ignore[index]  # no new event


async def _named(client: HaClient, unique_id: str, name: str) -> bool:
    state = await client.state(unique_id)
    return state is not None and state["attributes"].get("friendly_name") == name


# -- extras: people in view, unknown faces, area, review page, names ------------------------------
async def test_people_count_unknown_event_area_link_and_names(tmp_path: Path, ha: Ha, client: HaClient):
    thing = "ha-extras"
    config = config_for(tmp_path, thing, ha.broker.port, camera_ids=("front_door",),
                        configuration_url="http://door.local:8750/", cameras={"front_door": {"area": "Hall"}})
    prefix = f"{node(thing)}_front_door"
    async with running(config) as host:
        await listening(ha, thing, "front_door")
        host.fire("face_detected", event=face("front_door", "t1"))
        host.fire("face_detected", event=face("front_door", "t2"))
        host.fire("unknown_face", event=face("front_door", "t2", "person-x"))
        await state_of(client, f"{prefix}_people", "2")
        await state_of(client, f"{prefix}_unknown_person", "on")
        await until(lambda: _event_of_camera(client, prefix, "unknown"), "the unknown event")
        host.fire("track_ended", event=ended("front_door", "t1"))
        await state_of(client, f"{prefix}_people", "1")
        camera = await client.device(prefix)
        hub = await client.device(node(thing))
        assert camera is not None and camera["name"] == "Front door"
        assert hub is not None and hub["configuration_url"] == "http://door.local:8750/"
        areas = await client.call("config/area_registry/list")
        assert camera["area_id"] == next(a["area_id"] for a in areas if a["name"] == "Hall")


async def _event_of_camera(client: HaClient, prefix: str, event_type: str) -> bool:
    state = await client.state(f"{prefix}_person_recognised")
    return state is not None and state["attributes"].get("event_type") == event_type


async def test_the_real_daemon_in_ha(tmp_path: Path, ha: Ha, client: HaClient, enrolled: Enrolled):
    """End to end: the daemon recognises a real photo; HA shows the person home, named on the camera."""
    thing, obama = "ha-daemon", enrolled.person_id("Barack Obama")
    config = make_config(enrolled.state(tmp_path), device={"thing": thing}, cameras=[
        {"id": "front_door", "source": str(FIXTURES / "obama2.jpg"), "loop": True, "pace": "realtime", "fps": 5}],
        plugins={"homeassistant": {"host": HOST, "port": ha.broker.port, "reconnect_min_s": 0.1}})

    async def scenario(daemon: Any) -> None:
        await state_of(client, f"{node(thing)}_person_{obama}", "home")
        await state_of(client, f"{node(thing)}_front_door_last_person", "Barack Obama")
        await state_of(client, f"{node(thing)}_front_door_people", "1")
        await state_of(client, f"{node(thing)}_person_{obama}_camera", "Front door")

    host = PluginHost(config)
    host.load()
    await run_in_loop(config, host, until=scenario)


def test_ha_logged_no_problem_with_anything_we_sent(ha: Ha) -> None:
    """Last in the module: every payload above was accepted, and every template rendered, without a word."""
    assert ha.home.problems("homeassistant.components.mqtt", "homeassistant.helpers.template",
                            "homeassistant.components.device_tracker", "homeassistant.components.sensor") == []


def test_the_ha_venv_is_required_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without .venv-ha, CI fails with a message saying how to get it (a skip would hide the missing HA)."""
    import tests.support.homeassistant as support

    monkeypatch.setattr(support, "HASS", tmp_path / "no-venv" / "bin" / "hass")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="make test"):
        support.hass_or_fail()
