"""A camera that keeps dropping frames: the health figures reach the metrics endpoint, and the sustained drops
an alert. The real daemon, real photos and a real command channel: one detection thread, hogged by a crowd
of 29 faces on one camera, while another camera's source runs at 200 frames a second."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog

from facewatchd.plugins import PluginHost
from tests.plugins.support import eventually, frames_dir, run_in_loop
from tests.plugins.test_alerts_metrics import APPEND_STDIN, samples, scrape
from tests.support.broker import free_port
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)


def busy_cameras(tmp_path: Path) -> list[dict]:
    crowd = frames_dir(tmp_path / "crowd", (FIXTURES / "solvay_conference_1927.jpg", 5))
    fast = tmp_path / "fast"
    fast.mkdir()
    for i in range(50):  # small frames, each a little brighter: the motion gate lets every one through
        cv2.imwrite(str(fast / f"{i:04d}.png"), np.full((48, 64, 3), i * 5, np.uint8))
    return [{"id": "fast", "source": str(fast), "loop": True, "pace": "realtime", "fps": 200.0},
            {"id": "crowd", "source": str(crowd), "loop": True}]


async def test_sustained_drops_are_a_warning_an_alert_and_metrics(tmp_path: Path) -> None:
    port = free_port()
    alerts = tmp_path / "alerts.jsonl"
    config = make_config(tmp_path / "state", device={"workers": 1}, cameras=busy_cameras(tmp_path),
                         health={"interval_s": 0.5, "max_drop_rate": 0.05, "drop_intervals": 2},
                         plugins={"metrics": {"port": port},
                                  "alerts": {"command": {"argv": [sys.executable, "-c", APPEND_STDIN, str(alerts)]}}})
    host = PluginHost(config)
    host.load()
    seen: dict[str, float] = {}

    def sent() -> list[dict]:
        return [json.loads(line) for line in alerts.read_text().splitlines() if line] if alerts.exists() else []

    async def alerted_and_scraped(daemon) -> None:  # type: ignore[no-untyped-def]
        await eventually(lambda: any(a["alert"] == "frames_dropped" for a in sent()), 60, what="a frames_dropped alert")
        seen.update(samples((await scrape(port))[1]))

    with structlog.testing.capture_logs() as logs:
        await run_in_loop(config, host, until=alerted_and_scraped, timeout=90)
    [alert] = [a for a in sent() if a["alert"] == "frames_dropped"]  # once: the alert is rate-limited per camera
    assert alert["camera"] == "fast" and alert["drop_rate"] > 0.05 and alert["bound"] == 0.05
    warnings = [e for e in logs if e["event"] == "frames_dropping"]
    assert warnings and {(e["log_level"], e["camera"], e["intervals"]) for e in warnings} == {("warning", "fast", 2)}
    assert seen['facewatchd_camera_fps_in{camera="fast"}'] > seen['facewatchd_camera_fps_out{camera="fast"}']
    assert seen['facewatchd_camera_frames_dropped_total{camera="fast"}'] > 0
    assert seen['facewatchd_camera_dropping{camera="fast"}'] == 1
    assert seen['facewatchd_camera_dropping{camera="crowd"}'] == 0  # files read on demand never drop
    assert seen['facewatchd_camera_frames_dropped_total{camera="crowd"}'] == 0
    assert seen['facewatchd_detect_seconds{camera="crowd"}'] > seen['facewatchd_detect_seconds{camera="fast"}'] > 0
    assert seen["facewatchd_outbox_requests"] >= 0
