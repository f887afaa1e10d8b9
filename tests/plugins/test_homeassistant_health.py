"""The health line's figures as Home Assistant diagnostic sensors: each camera's on its device, the outbox on
the hub; their configs survive the reconcile at connect and their state follows the health line. A subscriber
on a real mosquitto while the real daemon runs on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from facewatchd.plugins import PluginHost
from tests.plugins.support import MqttRecorder, eventually, frames_dir, read_retained, run_in_loop
from tests.plugins.test_homeassistant import BASE, NODE, check_discovery, configs
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)
FIGURES = ("fps_in", "fps_out", "drop_rate", "detect_ms", "embed_ms")


async def test_health_figures_are_diagnostic_sensors(tmp_path: Path, broker: Mosquitto) -> None:
    door = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 5), ("blank", 1))
    config = make_config(tmp_path / "state", health={"interval_s": 0.3}, cameras=[
        {"id": "door", "source": str(door), "loop": True, "pace": "realtime", "fps": 10}],
        plugins={"homeassistant": {"host": broker.host, "port": broker.port}})
    host = PluginHost(config)
    host.load()
    wanted = {f"homeassistant/sensor/{NODE}/door_health_{key}/config" for key in FIGURES} | \
        {f"homeassistant/sensor/{NODE}/outbox/config"}
    async with MqttRecorder(broker, "homeassistant/#", "facewatchd/#") as ha:
        def states() -> list[dict]:
            return [json.loads(p) for p in ha.on(f"{BASE}/door/health")]

        async def reported(daemon) -> None:  # type: ignore[no-untyped-def]
            await eventually(lambda: wanted <= set(configs(ha)), 30, what="the health sensors' discovery")
            await eventually(lambda: any(s["fps_in"] > 0 and s["detect_ms"] for s in states()), 30,
                             what="a health state with frames and detections")
            await eventually(lambda: any(e["event"] == "ha_reconciled" for e in logs), 30, what="the reconcile")
            after = len(states())
            await eventually(lambda: len(states()) > after, 30, what="a health state after the reconcile")

        with structlog.testing.capture_logs() as logs:
            await run_in_loop(config, host, until=reported, timeout=90)
    found = configs(ha)
    for topic in wanted:
        component, entity = check_discovery(topic, found[topic])
        assert component == "sensor" and entity["entity_category"] == "diagnostic"
        assert entity["state_class"] == "measurement" and entity["unit_of_measurement"]
    door_fps = json.loads(found[f"homeassistant/sensor/{NODE}/door_health_fps_in/config"])
    assert door_fps["device"]["identifiers"] == [f"{NODE}_door"]  # on the camera's own device
    assert door_fps["state_topic"] == f"{BASE}/door/health" and door_fps["unit_of_measurement"] == "fps"
    outbox = json.loads(found[f"homeassistant/sensor/{NODE}/outbox/config"])
    assert outbox["device"]["identifiers"] == [NODE] and ha.last(f"{BASE}/outbox") is not None
    assert all(set(FIGURES) <= set(s) for s in states())
    # the reconcile at connect kept them: they are still the broker's retained configs after the run
    retained = await read_retained(broker, f"homeassistant/sensor/{NODE}/+/config")
    assert wanted <= {t for t, p in retained.items() if p}
