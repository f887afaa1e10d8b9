"""The health line's diagnostic sensors in a real Home Assistant (tests/support/homeassistant.py): HA makes
them diagnostic entities of the camera's device and of the hub, shows the daemon's figures with their units,
and logs no problem with what was sent (a figure that is None, no detection in the interval, is unknown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facewatchd.plugins import PluginHost
from tests.plugins.support import frames_dir, run_in_loop
from tests.plugins.ha_support import Ha, node, until
from tests.support.broker import HOST
from tests.support.daemon import FIXTURES, make_config
from tests.support.homeassistant import HaClient

pytestmark = pytest.mark.timeout(240)


def number(state: str) -> float:
    try:
        return float(state)
    except ValueError:  # unknown, unavailable
        return 0.0


async def test_health_sensors_in_ha(tmp_path: Path, ha: Ha, client: HaClient) -> None:
    thing = "ha-health"
    door = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 5), ("blank", 1))
    config = make_config(tmp_path / "state", device={"thing": thing}, health={"interval_s": 0.5}, cameras=[
        {"id": "front_door", "source": str(door), "loop": True, "pace": "realtime", "fps": 10}],
        plugins={"homeassistant": {"host": HOST, "port": ha.broker.port, "reconnect_min_s": 0.1}})
    camera_uid = f"{node(thing)}_front_door"
    found: dict[str, Any] = {}

    async def scenario(daemon: Any) -> None:
        async def measured() -> bool:
            state = await client.state(f"{camera_uid}_health_fps_in")
            detect = await client.state(f"{camera_uid}_health_detect_ms")
            ok = state is not None and detect is not None and number(state["state"]) > 0 and number(detect["state"]) > 0
            if ok:
                found.update(fps=state, detect=detect)
            return ok

        await until(measured, "HA to show the camera's frames in and detector time", timeout=90)
        found["outbox"] = await until(lambda: client.state(f"{node(thing)}_outbox"), "HA's outbox sensor")

    host = PluginHost(config)
    host.load()
    await run_in_loop(config, host, until=scenario, timeout=150)
    assert found["fps"]["attributes"]["unit_of_measurement"] == "fps"
    assert 0 < float(found["fps"]["state"]) <= 15
    assert float(found["detect"]["state"]) > 0 and found["detect"]["attributes"]["unit_of_measurement"] == "ms"
    assert found["outbox"]["state"].isdigit()
    camera_device = await client.device(camera_uid)
    hub = await client.device(node(thing))
    for key in ("fps_in", "fps_out", "drop_rate", "detect_ms", "embed_ms"):
        entity = await client.entity(f"{camera_uid}_health_{key}")
        assert entity is not None and entity["entity_category"] == "diagnostic", (key, entity)
        assert entity["device_id"] == camera_device["id"]
    outbox = await client.entity(f"{node(thing)}_outbox")
    assert outbox["entity_category"] == "diagnostic" and outbox["device_id"] == hub["id"]
    problems = ha.home.problems("homeassistant.components.mqtt", "homeassistant.helpers.template",
                                "homeassistant.components.sensor")
    print("HA problems:", problems)
    assert problems == []  # this module's own HA: every payload and template above was accepted
