"""Several cameras in one daemon, on the real sample clip: one camera's embeddings never hold up the
detection of the others (bench/cameras.py measures how many cameras one process holds)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import numpy as np

import facewatchd.app.device as daemon_module
from facewatchd.app.device import Daemon
from facewatchd.plugins import PluginHost
from facewatchd.vision.embedder import create_embedder
from tests.support.daemon import SAMPLE_CLIP, make_config

CAMERAS = 3


class HeldEmbedder:
    """The real SFace embedder, whose passes wait until the test lets them run: a busy network."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) -> Any:
        self.entered.set()
        self.release.wait()
        return self._inner.embed_batch_with_norms(aligned, mirror)


def until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_detection_goes_on_while_the_embedder_is_busy(tmp_path, monkeypatch):
    """While every SFace thread is busy, every camera's frames are still detected (up to the frames the
    tracking stage queues): on a shared pool, queued embeddings took every worker and all detection
    stopped, so several cameras dropped frames with a core idle."""
    held: list[HeldEmbedder] = []

    def embedder(config: Any, networks: int | None = None) -> HeldEmbedder:
        held.append(HeldEmbedder(create_embedder(config, networks)))
        return held[-1]

    monkeypatch.setattr(daemon_module, "create_embedder", embedder)
    config = make_config(tmp_path / "state", *[SAMPLE_CLIP] * CAMERAS, device={"workers": 2})
    config = config.model_copy(update={"cameras": [c.model_copy(update={"fps": 5.0}) for c in config.cameras]})
    host = PluginHost(config)
    host.load()
    daemon = Daemon(config, host)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=asyncio.run(daemon.run())), daemon=True)
    runner.start()

    def detected() -> list[int]:  # frames each camera's detection stage has run on
        return [daemon.detect_clock.totals(camera.id).calls for camera in config.cameras]

    try:
        assert until(lambda: bool(held) and held[0].entered.is_set(), 60), "no face was embedded"
        at_hold = detected()
        # each camera detects on until its tracking stage's queue is full (STAGE_QUEUE_SIZE frames)
        progressed = until(lambda: all(n >= was + 2 for n, was in zip(detected(), at_hold)), 20)
        calls = detected()
    finally:
        if held:
            held[0].release.set()
        runner.join(120)
    assert progressed, f"detection stopped while the embedder was busy: {at_hold} → {calls} detections"
    summary = result["summary"]
    assert summary.frames == CAMERAS * summary.frames // CAMERAS and summary.frames_dropped == 0
    assert summary.tracks >= CAMERAS and summary.embeds > 0


def test_one_camera_embeds_on_one_network_and_several_on_two(tmp_path):
    """One network (80 MB) for one camera; two SFace threads for several on two cores, where new faces come
    in bursts (bench/cameras.py: 4 cameras held, where one thread held 1); [device] embed_threads wins."""
    one = make_config(tmp_path, SAMPLE_CLIP)
    four = make_config(tmp_path, *[SAMPLE_CLIP] * 4)
    assert daemon_module.embedding_threads(one, 1) == 1
    assert daemon_module.embedding_threads(four, 4) == min(2, os.cpu_count() or 1)
    assert daemon_module.embedding_threads(make_config(tmp_path, SAMPLE_CLIP, device={"embed_threads": 3}), 1) == 3


class SlowEmbedder(HeldEmbedder):
    """The real embedder, 50 ms slower a pass: a recognizer that falls behind the detection stage."""

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) -> Any:
        time.sleep(0.05)
        return self._inner.embed_batch_with_norms(aligned, mirror)


def test_the_same_frames_give_the_same_detections_whatever_the_recognizers_pace(tmp_path, monkeypatch):
    """Where to detect (regions, the motion gate) follows the tracks as of the last detected frame, not as
    far as the recognizer has got: a slow embedder changes nothing that was detected (CI once saw 190 faces
    where the detector alone found 192, from the detection stage reading the recognizer's tracker)."""
    def run(slow: bool) -> Any:
        if slow:
            monkeypatch.setattr(daemon_module, "create_embedder",
                                lambda config, networks=None: SlowEmbedder(create_embedder(config, networks)))
        config = make_config(tmp_path / f"state-{slow}", SAMPLE_CLIP)
        host = PluginHost(config)
        host.load()
        return asyncio.run(Daemon(config, host).run())

    fast, slow = run(False), run(True)
    assert slow.frames_in_regions > 0  # regions did the work between full frames
    assert (slow.faces, slow.frames_gated, slow.frames_in_regions, slow.tracks) == \
        (fast.faces, fast.frames_gated, fast.frames_in_regions, fast.tracks)
