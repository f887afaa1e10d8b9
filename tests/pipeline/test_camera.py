import asyncio

import cv2
import numpy as np

from facewatchd.pipeline.camera import Camera, CameraConfig, CameraStats, Frame, LatestFrameSlot
from tests.support.daemon import FIXTURES, SAMPLE_CLIP


async def collect(camera: Camera, delay: float = 0.0, limit: int = 10_000) -> list[Frame]:
    stop = asyncio.Event()
    out = []
    async for frame in camera.frames(stop):
        out.append(frame)
        if delay:
            await asyncio.sleep(delay)  # a pipeline slower than the camera
        if len(out) >= limit:
            stop.set()
    return out


def test_latest_frame_wins_and_drops_are_counted():
    async def main():
        stats = CameraStats()
        slot = LatestFrameSlot(asyncio.get_running_loop(), stats)
        for i in range(3):
            slot.put_threadsafe(Frame("c", i, float(i), np.zeros((2, 2, 3), np.uint8)))
        await asyncio.sleep(0)
        frame = await slot.get()
        return frame, stats

    frame, stats = asyncio.run(main())
    assert frame.index == 2 and stats.dropped == 2


def test_file_asap_reads_every_frame_and_ends():
    camera = Camera(CameraConfig(id="c", source=str(SAMPLE_CLIP)))
    frames = asyncio.run(collect(camera))
    assert len(frames) == 275 and camera.stats.dropped == 0
    assert [f.index for f in frames[:3]] == [1, 2, 3]


def test_realtime_file_with_slow_pipeline_drops_stale_frames():
    camera = Camera(CameraConfig(id="c", source=str(SAMPLE_CLIP), pace="realtime"))
    frames = asyncio.run(collect(camera, delay=0.1, limit=20))
    assert camera.stats.dropped > 0
    assert frames[-1].index - frames[0].index > len(frames)  # it skipped ahead to the latest frame


def test_image_directory_skips_corrupt_images(tmp_path):
    (tmp_path / "1.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(tmp_path / "2.jpg"), cv2.imread(str(FIXTURES / "obama.jpg")))
    camera = Camera(CameraConfig(id="c", source=str(tmp_path)))
    frames = asyncio.run(collect(camera))
    assert len(frames) == 1 and camera.stats.unreadable == 1


def test_fps_cap_and_loop():
    camera = Camera(CameraConfig(id="c", source=str(SAMPLE_CLIP), fps=5, loop=True))
    frames = asyncio.run(collect(camera, limit=60))
    assert len(frames) == 60  # looped: 9.2 s at 5 fps is ~46 frames per pass
    assert all(b.ts - a.ts >= 0.19 for a, b in zip(frames, frames[1:]) if b.ts > a.ts)


def test_an_image_directory_in_real_time_is_timed_by_its_pace(tmp_path):
    """Images have no clock of their own: paced in real time, image n is due n periods after the start (fps, or
    30 a second), and that is its timestamp, so dwell times and timers in the camera's clock match the pace."""
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((8, 8, 3), 40 * i, np.uint8))
    paced = asyncio.run(collect(Camera(CameraConfig(id="c", source=str(tmp_path), pace="realtime", fps=10))))
    assert [round(f.ts, 6) for f in paced] == [0.1, 0.2, 0.3, 0.4]  # every image: fps paces them, skips none
    default = asyncio.run(collect(Camera(CameraConfig(id="c", source=str(tmp_path), pace="realtime"))))
    steps = [f.ts * 30 for f in default]  # (a loaded machine may drop one: the latest frame wins)
    assert steps == sorted(steps) and all(abs(step - round(step)) < 1e-6 for step in steps) and steps[-1] < 4.5
    asap = asyncio.run(collect(Camera(CameraConfig(id="c", source=str(tmp_path)))))
    assert [f.ts for f in asap] == [1.0, 2.0, 3.0, 4.0]  # read on demand: one a second, as before
