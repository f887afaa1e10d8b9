"""A crowd walks in: the Solvay photo's faces start their tracks in one frame, so the Home Assistant plugin
gets a face_detected per face at once, each publishing over QoS 1. They go out a few at a time: every
state arrives, and aiomqtt never warns of a pile of pending publish calls (which, at every loop of the
9 s sample clip, it did: "There are 11 pending publish calls."). Real daemon, real photo, real mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from facewatchd.plugins import PluginHost
from tests.plugins.support import MqttRecorder, eventually, frames_dir, run_in_loop
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)


async def test_a_burst_of_hooks_never_piles_up_pending_publishes(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        frames = frames_dir(tmp_path / "frames", (FIXTURES / "solvay_conference_1927.jpg", 3))
        config = make_config(tmp_path / "state", frames,
                             plugins={"homeassistant": {"host": broker.host, "port": broker.port}})
        host = PluginHost(config)
        host.load()
        people = "facewatchd/facewatchd-demo/cam0/people"
        async with MqttRecorder(broker, "facewatchd/#") as recorder:
            with structlog.testing.capture_logs() as logs:
                async def crowd_counted(daemon) -> None:  # type: ignore[no-untyped-def]
                    await eventually(lambda: daemon.recognizer is not None and daemon.recognizer.stats.tracks >= 20,
                                     60, what="the crowd's tracks")
                    tracks = daemon.recognizer.stats.tracks
                    await eventually(lambda: any(t == people and p == str(tracks).encode()
                                                 for t, p, _ in recorder.messages), 30, what=f"{tracks} people in view")

                await run_in_loop(config, host, until=crowd_counted, timeout=90)
        counts = [p for t, p, _ in recorder.messages if t == people]
        assert len(counts) >= 20  # one state per face that came: none lost
        piled = [e for e in logs if "pending publish calls" in str(e.get("detail", ""))]
        assert not piled, piled
    finally:
        broker.stop()
