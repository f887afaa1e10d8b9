"""Devices and entities as an HA user expects them (issue 24, items 8 to 11), against the real Home Assistant
of conftest.py: one device per camera, named from the config, with the footfall sensors on it; a hub named
once; an area only when one is configured; counters HA's statistics add up; the review page's link; and the
states after a clean stop and after a kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from facewatchd.web.auth import hash_password
from tests.plugins.conftest import Enrolled
from tests.plugins.ha_support import Ha, ended, face, node, running, state_of, until
from tests.support.broker import HOST
from tests.support.daemon import FIXTURES, ROOT, make_config
from tests.support.homeassistant import HaClient

pytestmark = pytest.mark.timeout(180)


def config_with(tmp_path: Path, thing: str, ha: Ha, cameras: dict[str, dict[str, str]] | None = None,
                web: dict[str, Any] | None = None, analytics: bool = False) -> Any:
    """Cameras `sample` and `front_door`; the homeassistant plugin with `cameras` as its camera options, and
    the analytics plugin's sensors on the same broker when asked for."""
    broker = {"host": HOST, "port": ha.broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}
    plugins: dict[str, Any] = {"homeassistant": {**broker, "cameras": cameras or {}}}
    if analytics:
        plugins["analytics"] = {"mqtt": broker}
    return make_config(tmp_path / "state", device={"thing": thing}, web=web or {},
                       cameras=[{"id": c, "source": str(FIXTURES / "obama.jpg")} for c in ("sample", "front_door")],
                       plugins=plugins)


async def devices_of(client: HaClient, thing: str) -> list[dict[str, Any]]:
    """Every device of this thing in HA's device registry (hub, cameras, persons)."""
    prefix = node(thing)
    return [d for d in await client.devices()
            if any(domain == "mqtt" and (i == prefix or i.startswith(f"{prefix}_")) for domain, i in d["identifiers"])]


async def area_named(client: HaClient, area_id: str | None) -> str | None:
    areas = await client.call("config/area_registry/list")
    return next((a["name"] for a in areas if a["area_id"] == area_id), None)


# -- item 8: one device per camera, named from the config; the hub named once ---------------------
async def test_one_device_per_camera_named_from_the_config_with_the_footfall_on_it(tmp_path: Path, ha: Ha,
                                                                                    client: HaClient):
    thing = "facewatchd-names"  # a thing that says facewatchd already: the hub is not "facewatchd facewatchd-…"
    config = config_with(tmp_path, thing, ha, cameras={"sample": {"name": "Hall camera"}}, analytics=True)
    footfall = f"{node(thing)}_footfall_sample_visits_today"
    async with running(config) as host:
        host.fire("link_status", online=True, link="local")
        await state_of(client, f"{node(thing)}_resolver_link", "on")
        await state_of(client, footfall, "0")
        await state_of(client, f"{node(thing)}_front_door_people", "0")
        devices = await devices_of(client, thing)
        by_identifier = {i: d for d in devices for _, i in d["identifiers"]}
        hub, hall, door = (by_identifier.get(f"{node(thing)}{suffix}") for suffix in ("", "_sample", "_front_door"))
        assert hub is not None and hall is not None and door is not None, by_identifier.keys()
        assert len(devices) == 3, [d["name"] for d in devices]  # the hub and one device per camera, no other
        assert (hub["name"], hall["name"], door["name"]) == ("facewatchd-names", "Hall camera", "Front door")
        assert hall["via_device_id"] == door["via_device_id"] == hub["id"]
        entities = [e for e in await client.entities() if e["device_id"] in (hub["id"], hall["id"], door["id"])]
        on_hall = {e["original_name"] for e in entities if e["device_id"] == hall["id"]}
        assert {"Last recognised person", "People in view", "Visits today", "Mean dwell today"} <= on_hall
        for entity in entities:  # HA prefixes the device's name: an entity's own name never repeats it
            device_name = next(d["name"] for d in devices if d["id"] == entity["device_id"])
            assert entity["original_name"] and device_name.casefold() not in entity["original_name"].casefold()
        assert (await client.state(f"{node(thing)}_resolver_link"))["attributes"]["friendly_name"] == \
            "facewatchd-names Resolver link"  # type: ignore[index]
        footfall_state = await client.state(footfall)
        assert footfall_state is not None and footfall_state["attributes"]["friendly_name"] == "Hall camera Visits today"


async def test_the_footfall_device_of_an_earlier_version_leaves_for_the_cameras(tmp_path: Path, ha: Ha,
                                                                                client: HaClient):
    """What the analytics plugin published before: a "sample footfall" device beside the camera's. HA never
    moves an entity to another device, so those sensors go, with their device, and new ones are on the camera."""
    thing = "ha-upgrade"
    earlier = f"{node(thing)}_analytics"
    async with aiomqtt.Client(ha.broker.host, ha.broker.port, identifier="earlier-version") as mqtt:
        await mqtt.publish(f"homeassistant/sensor/{earlier}/sample_visits_today/config", json.dumps({
            "name": "Visits today", "unique_id": f"{earlier}_sample_visits_today", "state_class": "measurement",
            "device": {"identifiers": [f"{earlier}_sample"], "name": "sample footfall", "model": "facewatchd analytics",
                       "manufacturer": "facewatchd", "sw_version": "0.1.0"},
            "state_topic": f"facewatchd/{thing}/analytics/sample", "value_template": "{{ value_json.visits_today }}"}),
            qos=1, retain=True)
    await until(lambda: client.device(f"{earlier}_sample"), "the earlier footfall device in HA")
    async with running(config_with(tmp_path, thing, ha, analytics=True)):
        await state_of(client, f"{node(thing)}_footfall_sample_visits_today", "0")
        await until(lambda: _gone(client, f"{earlier}_sample"), "the earlier footfall device to leave HA")
        camera = await client.device(f"{node(thing)}_sample")
        sensor = await client.entity(f"{node(thing)}_footfall_sample_visits_today")
        assert camera is not None and sensor is not None and sensor["device_id"] == camera["id"]
        assert [d["name"] for d in await devices_of(client, thing)].count("Sample") == 1


async def _gone(client: HaClient, identifier: str) -> bool:
    return await client.device(identifier) is None and await client.entity(f"{identifier}_visits_today") is None


# -- item 10: an area only when configured, and what HA does with a later one -----------------------
async def test_an_area_only_when_configured_and_a_later_one_places_a_device_that_has_none(tmp_path: Path, ha: Ha,
                                                                                          client: HaClient):
    thing = "ha-areas"
    areas_before = {a["name"] for a in await client.call("config/area_registry/list")}
    async with running(config_with(tmp_path, thing, ha)):  # no camera options: no area, none made up
        await state_of(client, f"{node(thing)}_sample_people", "0")
        sample = await client.device(f"{node(thing)}_sample")
        assert sample is not None and sample["area_id"] is None
        assert {a["name"] for a in await client.call("config/area_registry/list")} == areas_before  # no "Sample"
    async with running(config_with(tmp_path, thing, ha, cameras={"sample": {"area": "Hall"}})):
        await until(lambda: _in_area(client, f"{node(thing)}_sample", "Hall"), "the device moved to Hall")
    # HA applies a suggested area only to a device without one: a changed area does not move it (the user does)
    async with running(config_with(tmp_path, thing, ha, cameras={"sample": {"area": "Garage", "name": "Yard"}})):
        await until(lambda: _named(client, f"{node(thing)}_sample", "Yard"), "the device renamed Yard")
        assert await _in_area(client, f"{node(thing)}_sample", "Hall")


async def _in_area(client: HaClient, identifier: str, area: str) -> bool:
    device = await client.device(identifier)
    return device is not None and await area_named(client, device["area_id"]) == area


async def _named(client: HaClient, identifier: str, name: str) -> bool:
    device = await client.device(identifier)
    return device is not None and device["name"] == name


# -- item 10: the review page's link, as another machine reaches it --------------------------------
@pytest.mark.parametrize(("web", "expected"), [
    ({"host": "127.0.0.1"}, None),  # loopback: no machine but this one can follow it
    ({"host": "0.0.0.0", "hostnames": ["door.example.net"], "port": 8751}, "http://door.example.net:8751/"),
    ({"host": "192.168.7.20"}, "http://192.168.7.20:8750/"),
])
async def test_the_hub_links_the_review_page_only_where_others_reach_it(tmp_path: Path, ha: Ha, client: HaClient,
                                                                        web: dict[str, Any], expected: str | None):
    thing = f"ha-link-{web['host'].replace('.', '-')}"
    config = config_with(tmp_path, thing, ha, web={**web, "password_hash": hash_password("correct horse")})
    async with running(config) as host:
        host.fire("link_status", online=True, link="local")
        await state_of(client, f"{node(thing)}_resolver_link", "on")
        hub = await client.device(node(thing))
        assert hub is not None and hub["configuration_url"] == expected


# -- item 9: counters as HA's statistics want them ---------------------------------------------------
async def test_counts_are_totals_since_their_reset_and_every_sensor_has_an_icon(tmp_path: Path, ha: Ha,
                                                                                client: HaClient):
    thing = "ha-counters"
    async with running(config_with(tmp_path, thing, ha, analytics=True)) as host:
        host.fire("track_ended", event=ended("sample", "t1"))  # one visit of 1 s
        visits = await state_of(client, f"{node(thing)}_footfall_sample_visits_this_hour", "1")
        today = await state_of(client, f"{node(thing)}_footfall_sample_visits_today", "1")
        dwell = await state_of(client, f"{node(thing)}_footfall_sample_mean_dwell_today_s", "1.0")
        people = await state_of(client, f"{node(thing)}_sample_people", "0")
    for count in (visits, today):
        assert count["attributes"]["state_class"] == "total" and count["attributes"]["last_reset"], count
        assert count["attributes"]["icon"] == "mdi:walk"
    assert visits["attributes"]["last_reset"].endswith(":00:00+00:00")  # the start of this hour
    assert (dwell["attributes"]["state_class"], dwell["attributes"]["unit_of_measurement"],
            dwell["attributes"]["device_class"]) == ("measurement", "s", "duration")
    # how many are in view now: a measurement (it goes up and down), not a count that adds up
    assert people["attributes"]["state_class"] == "measurement" and people["attributes"]["icon"] == "mdi:account-group"


# -- item 11: states after a stop ----------------------------------------------------------------------
async def test_a_clean_stop_leaves_persons_not_home_and_the_daemon_unavailable(tmp_path: Path, ha: Ha,
                                                                               client: HaClient):
    thing = "ha-stop"
    tracker = f"{node(thing)}_person_person-ida"
    async with running(config_with(tmp_path, thing, ha)) as host:
        host.fire("link_status", online=True, link="local")
        host.fire("face_recognised", event=face("sample", "t1", "person-ida", "Ida"))  # in view at the stop
        await state_of(client, tracker, "home")
        await state_of(client, f"{node(thing)}_resolver_link", "on")
    await state_of(client, tracker, "not_home")  # nobody is seen by a stopped daemon
    await state_of(client, f"{tracker}_camera", "Sample")  # still true: where she was seen last
    for own in ("resolver_link", "sample_people", "sample_last_person", "front_door_unknown_person"):
        await state_of(client, f"{node(thing)}_{own}", "unavailable")
    assert (await client.state(tracker))["state"] == "not_home"  # type: ignore[index]  # and stays so


def daemon_config(tmp_path: Path, state: Path, thing: str, ha: Ha) -> Path:
    path = tmp_path / "facewatchd.toml"
    path.write_text(f'[device]\nstate_dir = "{state}"\nthing = "{thing}"\n'
                    '[logging]\nformat = "json"\nlevel = "warning"\n'
                    f'[[cameras]]\nid = "front_door"\nsource = "{FIXTURES / "obama2.jpg"}"\n'
                    'loop = true\npace = "realtime"\nfps = 5\n'
                    f'[plugins.homeassistant]\nhost = "{HOST}"\nport = {ha.broker.port}\nreconnect_min_s = 0.1\n')
    return path


def start_daemon(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--config", str(config)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def test_the_real_daemon_stopped_and_killed(tmp_path: Path, ha: Ha, client: HaClient, enrolled: Enrolled):
    """SIGTERM (systemd's stop): the person not_home, the daemon's entities unavailable. SIGKILL (or a power
    cut): the broker sends the will, and a tracker that said home turns unavailable, since no one vouches
    for it any more, also in an HA restarted meanwhile; the next start sets it not_home
    (test_homeassistant_real.py, item 2)."""
    thing, obama = "ha-signals", enrolled.person_id("Barack Obama")
    config = daemon_config(tmp_path, enrolled.state(tmp_path), thing, ha)
    tracker, people = f"{node(thing)}_person_{obama}", f"{node(thing)}_front_door_people"
    for sig, after in ((signal.SIGTERM, "not_home"), (signal.SIGKILL, "unavailable")):
        daemon = start_daemon(config)
        try:
            await state_of(client, tracker, "home")
            await state_of(client, people, "1")
            daemon.send_signal(sig)
            await asyncio.to_thread(daemon.wait, 30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        await state_of(client, tracker, after)
        await state_of(client, people, "unavailable")
        if sig == signal.SIGTERM:
            assert daemon.returncode == 0
    # HA restarted while the daemon is dead reads the same from the retained will and state
    await asyncio.to_thread(ha.home.stop)
    await asyncio.to_thread(ha.home.start)
    async with HaClient(ha.home) as restarted:
        await state_of(restarted, f"{tracker}_camera", "Front door")  # the retained state has arrived
        assert (await restarted.state(tracker))["state"] == "unavailable"  # type: ignore[index]


def test_ha_logged_no_problem_with_these_devices(ha: Ha) -> None:
    """Last in the module: the availability and last_reset templates rendered, and every payload was accepted."""
    assert ha.home.problems("homeassistant.components.mqtt", "homeassistant.helpers.template",
                            "homeassistant.components.device_tracker", "homeassistant.components.sensor") == []
