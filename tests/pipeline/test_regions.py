"""Detection on regions (pipeline/regions.py, YuNetDetector.detect_in), on real faces in real video: what the
regions find must include what the full frame finds, a face entering where no region was is found at once,
and a 1080p camera's small faces, lost to the full frame's downscale, are found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facewatchd.events import FaceEvent
from facewatchd.hookspecs import hookimpl
from facewatchd.pipeline.regions import RegionPlanner, merge
from facewatchd.plugins import PluginHost
from tests.support.daemon import make_config, run_daemon
from tests.support.faces import background, face_square, write_video

FPS = 10.0
SMALL = 64


class Detected:
    """Records when each track was first detected, as a plugin sees it."""

    def __init__(self) -> None:
        self.first_ts: dict[str, float] = {}

    @hookimpl
    def face_detected(self, event: FaceEvent) -> None:
        self.first_ts.setdefault(event.track_id, event.ts)


def run(tmp_path: Path, video: Path, **regions: Any) -> tuple[Any, Detected]:
    config = make_config(tmp_path / f"state-{len(list(tmp_path.iterdir()))}", video, regions=regions)
    host = PluginHost(config)
    seen = Detected()
    host.pm.register(seen, name="seen")
    return run_daemon(config, host), seen


def _noisy(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame.astype(np.float32) + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)


def test_a_face_entering_where_no_region_is_is_found_within_a_frame(tmp_path: Path) -> None:
    """Obama stands at the left of a still wall (his track's region is all that is detected between
    full-frame passes, here never after the first); from frame 20 Biden walks in from the right edge. He is
    found in the same frame as with full-frame detection on every frame, or the next."""
    rng = np.random.default_rng(1)
    obama, biden = face_square("obama2.jpg", 120), face_square("biden.jpg", 120)
    frames, enter_at, step = [], 20, 24
    for i in range(50):
        image = background()
        image[180:300, 40:160] = obama
        if i >= enter_at:
            x = max(480, 640 - step * (i - enter_at + 1))
            image[180:300, x:x + min(120, 640 - x)] = biden[:, :min(120, 640 - x)]
        frames.append(_noisy(image, rng))
    video = write_video(tmp_path / "enter.avi", frames, FPS)
    full, full_seen = run(tmp_path, video, enabled=False)
    regional, regional_seen = run(tmp_path, video, full_frame_every=1000)
    assert full.frames_in_regions == 0 and regional.frames_in_regions >= 45, regional  # regions did the work
    assert full.tracks == regional.tracks == 2, (full, regional)
    [biden_full] = sorted(full_seen.first_ts.values())[1:]
    [biden_regional] = sorted(regional_seen.first_ts.values())[1:]
    assert biden_full >= enter_at / FPS
    assert biden_regional <= biden_full + 1 / FPS + 1e-6, (biden_full, biden_regional)


@pytest.fixture(scope="module")
def small_faces() -> list[np.ndarray]:
    """Six photos' faces of about 35 px (64 px squares with their margin): a 1080p camera's small faces, 12 px
    once the frame is scaled to 640 wide."""
    return [face_square(photo, SMALL) for photo in ("obama.jpg", "biden.jpg", "obama2.jpg", "obama1.jpg",
                                                    "obama3.jpg", "obama_small.jpg")]


def test_a_1080p_cameras_small_faces_are_found_in_regions(tmp_path: Path, small_faces: list[np.ndarray]) -> None:
    """Six small faces drift across a 1080p wall: the full frame, scaled to 640 wide, finds at most what
    the regions find (each region is cut at native resolution), and the regions find every one."""
    rng = np.random.default_rng(2)
    wall = cv2.resize(background(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(30):
        image = wall.copy()
        for k, face in enumerate(small_faces):
            x, y = 200 + 280 * k + 3 * i, 300 + 90 * (k % 3)
            image[y:y + SMALL, x:x + SMALL] = face
        frames.append(_noisy(image, rng))
    video = write_video(tmp_path / "small.avi", frames, FPS)
    full, full_seen = run(tmp_path, video, enabled=False)
    regional, regional_seen = run(tmp_path, video)
    assert regional.frames_in_regions > 0
    assert len(regional_seen.first_ts) >= len(small_faces) > len(full_seen.first_ts), (full, regional)
    assert regional.faces > full.faces
    print(f"small faces at 1080p: full frame {len(full_seen.first_ts)} tracks {full.faces} faces, regions "
          f"{len(regional_seen.first_ts)} tracks {regional.faces} faces")


def test_regions_fall_back_to_the_full_frame_when_they_would_cost_as_much() -> None:
    planner = RegionPlanner()
    assert planner.plan(640, 480, [], None) is None  # the gate cannot tell where things moved
    assert planner.plan(640, 480, [(100, 100, 60, 60)], []) == [(40, 40, 221, 221)]  # a track, reached 1 face out
    assert planner.plan(640, 480, [], [(0.0, 0.0, 0.9, 0.9)]) is None  # most of the frame moved
    assert planner.plan(640, 480, [(100, 100, 60, 60)], [], cut=True) is None  # a new shot
    for _ in range(9):  # after a full frame, nine in regions
        assert planner.plan(640, 480, [(100, 100, 60, 60)], []) is not None
    assert planner.plan(640, 480, [(100, 100, 60, 60)], []) is None  # the 10th frame: the full frame again
    assert merge([(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40)]) == [(0, 0, 20, 20), (30, 30, 40, 40)]
