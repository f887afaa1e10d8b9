"""Alerts (webhook, MQTT, command) and the Prometheus endpoint, on the real daemon with real photos, a
camera that is not there, a real mosquitto and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from facewatchd.app.device import Daemon
from facewatchd.hookspecs import hookimpl
from facewatchd.link.local import LocalLink
from facewatchd.plugins import PluginHost
from tests.plugins.conftest import Enrolled
from tests.plugins.support import HttpReceiver, MqttRecorder, eventually, frames_dir, run_in_loop
from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)
OBAMA = "Barack Obama"
APPEND_STDIN = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"


def cameras(tmp_path: Path, enrolled: Enrolled) -> list[dict[str, Any]]:
    # front: Obama, a scene cut, Obama again (a second visit); yard: a stranger; lobby: a camera that is gone
    front = frames_dir(tmp_path / "front", (FIXTURES / "obama2.jpg", 4), ("blank", 1), (FIXTURES / "obama2.jpg", 4))
    yard = frames_dir(tmp_path / "yard", (enrolled.stranger, 3))
    return [{"id": "front", "source": str(front)}, {"id": "yard", "source": str(yard)},
            {"id": "lobby", "source": "/dev/video-nonexistent", "reopen_min_s": 0.05, "reopen_max_s": 0.2}]


def loaded(config: Any) -> PluginHost:
    host = PluginHost(config)
    host.load()
    return host


async def files_done(daemon: Daemon) -> None:
    await eventually(lambda: [c.stats.frames for c in daemon.cameras[:2]] == [9, 3], what="file cameras read")


async def test_alerts_on_person_unknown_and_camera_offline_over_every_channel(tmp_path, enrolled: Enrolled,
                                                                             broker: Mosquitto):
    webhook = HttpReceiver()
    command_out = tmp_path / "command.jsonl"
    config = make_config(enrolled.state(tmp_path), cameras=cameras(tmp_path, enrolled), plugins={"alerts": {
        "on_persons": [OBAMA.upper()], "rate_limit_s": 3600, "include_crop": True,
        "webhook": {"url": webhook.url("/hooks/facewatchd"), "headers": {"Authorization": "Bearer t0k3n"}},
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1},
        "command": {"argv": [sys.executable, "-c", APPEND_STDIN, str(command_out)]}}})
    try:
        async with MqttRecorder(broker, "facewatchd/+/alerts") as mqtt:
            def lines() -> list[str]:
                return command_out.read_text().splitlines() if command_out.exists() else []

            async def three_alerts_everywhere(daemon: Daemon) -> None:
                await files_done(daemon)
                await eventually(lambda: len(webhook.requests) >= 3 and len(mqtt.messages) >= 3 and len(lines()) >= 3,
                                 what="three alerts on every channel")

            await run_in_loop(config, loaded(config), until=three_alerts_everywhere)
    finally:
        webhook.close()

    by_channel = {"webhook": [json.loads(r.body) for r in webhook.requests],
                  "mqtt": [json.loads(p) for _, p, _ in mqtt.messages],
                  "command": [json.loads(line) for line in lines()]}
    for channel, alerts in by_channel.items():
        kinds = sorted(a["alert"] for a in alerts)
        assert kinds == ["camera_offline", "person", "unknown_face"], (channel, alerts)  # 2nd visit: rate-limited
        person = next(a for a in alerts if a["alert"] == "person")
        assert person["name"] == OBAMA and person["camera"] == "front" and person["similarity"] >= 0.363
        assert base64.b64decode(person["crop_jpeg_b64"])[:2] == b"\xff\xd8"
        unknown = next(a for a in alerts if a["alert"] == "unknown_face")
        assert unknown["camera"] == "yard" and unknown["name"] is None and unknown["person_id"]
        offline = next(a for a in alerts if a["alert"] == "camera_offline")
        assert offline["camera"] == "lobby" and "reopening" in offline["reason"]
    assert all(r.method == "POST" and r.headers["Authorization"] == "Bearer t0k3n" for r in webhook.requests)
    assert {t for t, _, _ in mqtt.messages} == {"facewatchd/facewatchd-demo/alerts"}


async def test_alert_channel_that_fails_does_not_stop_the_others(tmp_path, enrolled: Enrolled):
    webhook = HttpReceiver(answers={"/down": (503, 0.0)})
    command_out = tmp_path / "command.jsonl"
    frames = frames_dir(tmp_path / "yard", (enrolled.stranger, 3))
    config = make_config(enrolled.state(tmp_path), frames, plugins={"alerts": {
        "webhook": {"url": webhook.url("/down"), "attempts": 2},
        "command": {"argv": [sys.executable, "-c", APPEND_STDIN, str(command_out)]}}})
    try:
        await run_in_loop(config, loaded(config))
    finally:
        webhook.close()
    assert [r.path for r in webhook.requests] == ["/down", "/down"]  # tried twice, then logged
    assert [json.loads(line)["alert"] for line in command_out.read_text().splitlines()] == ["unknown_face"]


class Raises:
    @hookimpl
    def track_ended(self, event: Any) -> None:
        raise RuntimeError("plugin bug")


async def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


async def test_metrics_endpoint_counts_what_the_daemon_saw(tmp_path, enrolled: Enrolled):
    port = free_port()
    config = make_config(enrolled.state(tmp_path), cameras=cameras(tmp_path, enrolled),
                         plugins={"metrics": {"port": port}})
    host = loaded(config)
    host.register("buggy", Raises(), "test")
    seen: dict[str, float] = {}

    async def counted(daemon: Daemon) -> None:
        await files_done(daemon)

        async def check() -> bool:
            seen.update(samples((await scrape(port))[1]))
            return seen.get('facewatchd_camera_online{camera="lobby"}') == 0 and \
                seen.get('facewatchd_tracks_ended_total{camera="yard"}') == 1 and \
                seen.get('facewatchd_plugin_hook_failures_total{plugin="buggy"}') == 3

        for _ in range(200):
            if await check():
                break
            await asyncio.sleep(0.1)
        status, body = await scrape(port, "/")
        assert status == "HTTP/1.1 404 Not Found"

    await run_in_loop(config, host, until=counted)
    assert seen['facewatchd_faces_total{camera="front"}'] == 2  # two visits
    assert seen['facewatchd_faces_total{camera="yard"}'] == 1
    assert seen['facewatchd_recognitions_total{camera="front",source="cache"}'] == 2
    assert seen['facewatchd_unknown_faces_total{camera="yard"}'] == 1
    assert seen['facewatchd_tracks_ended_total{camera="front"}'] == 2
    assert seen['facewatchd_link_online{link="local"}'] == 1
    assert seen['facewatchd_camera_online{camera="front"}'] == 1
    assert seen['facewatchd_camera_online{camera="lobby"}'] == 0
    assert seen['facewatchd_plugin_hook_failures_total{plugin="buggy"}'] == 3
    assert seen["facewatchd_track_dwell_seconds_total{camera=\"front\"}"] > 0


class DeltasBreak(LocalLink):
    """The embedded link, except that its delta stream fails once the daemon runs (a link bug)."""

    async def deltas(self):  # type: ignore[no-untyped-def, override]
        raise RuntimeError("the delta stream broke")
        yield {}


async def test_a_dead_background_task_makes_the_daemon_unhealthy(tmp_path, enrolled: Enrolled):
    """The deltas task dies: the daemon must say so (/healthz 503; the watchdog stops, see
    facewatchd/systemd.py) instead of running on half-alive, its labels silently never applied."""
    from facewatchd.resolver.embedded import EmbeddedResolver

    port = free_port()
    state = enrolled.state(tmp_path)
    frames = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 1))
    config = make_config(state, cameras=[{"id": "front", "source": str(frames), "loop": True, "fps": 5,
                                          "pace": "realtime"}], plugins={"metrics": {"port": port}})
    embedded = EmbeddedResolver(state, config.resolver, identity=config.identity)
    link = DeltasBreak(config.device.thing, embedded.hub, embedded.resolver.resolve)
    host = loaded(config)

    async def unhealthy(daemon: Daemon) -> None:
        await eventually(lambda: daemon.problem() is not None, 20, what="the daemon to notice")
        status, body = await scrape(port, "/healthz")
        assert status == "HTTP/1.1 503 Service Unavailable" and "deltas" in body

    try:
        await run_in_loop(config, host, until=unhealthy, link=link)
    finally:
        embedded.close()
