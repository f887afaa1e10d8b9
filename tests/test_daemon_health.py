"""The health line of a running daemon: per camera, at info level, every `[health] interval_s`, with the
figures measured on the real pipeline (real photos, the real detector and embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from facewatchd.plugins import PluginHost
from tests.plugins.support import eventually, frames_dir, run_in_loop
from tests.support.daemon import FIXTURES, make_config

pytestmark = pytest.mark.timeout(120)


async def test_every_interval_each_camera_says_how_it_is_doing(tmp_path: Path) -> None:
    door = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 5), ("blank", 1))
    yard = frames_dir(tmp_path / "yard", (FIXTURES / "biden.jpg", 5), ("blank", 1))
    config = make_config(tmp_path / "state", health={"interval_s": 0.4}, cameras=[
        {"id": "door", "source": str(door), "loop": True, "pace": "realtime", "fps": 10},
        {"id": "yard", "source": str(yard), "loop": True, "pace": "realtime", "fps": 10}])
    with structlog.testing.capture_logs() as logs:
        def lines(camera: str) -> list[dict]:
            return [e for e in logs if e["event"] == "health" and e["camera"] == camera]

        async def measured(daemon) -> None:  # type: ignore[no-untyped-def]
            await eventually(lambda: all(any(e["embed_ms"] for e in lines(c)) and len(lines(c)) >= 3
                                         for c in ("door", "yard")), 60, what="health lines with embeddings")

        await run_in_loop(config, PluginHost(config), until=measured, timeout=90)
    for camera in ("door", "yard"):
        seen = lines(camera)
        assert {e["log_level"] for e in seen} == {"info"}
        assert {e["link"] for e in seen} == {"local"} and all(e["link_online"] for e in seen)
        assert all(isinstance(e["outbox"], int) and e["outbox"] >= 0 for e in seen)
        busy = [e for e in seen if e["fps_in"] > 0]
        assert busy and all(0 < e["fps_in"] <= 15 for e in busy)  # 10 frames a second, give or take a tick
        assert all(e["fps_out"] <= e["fps_in"] and 0 <= e["drop_rate"] <= 1 for e in busy)
        assert any(e["detect_ms"] and e["detect_ms"] > 0 for e in busy)
        assert any(e["embed_ms"] and e["embed_ms"] > 0 for e in seen)
