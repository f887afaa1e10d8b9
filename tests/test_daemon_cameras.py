"""Several cameras in one daemon, on the real sample clip: one camera's embeddings never hold up the
detection of the others (bench/cameras.py measures how many cameras one process holds)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

import facewatchd.app.device as daemon_module
from facewatchd.vision.detector import Face, YuNetDetector
from facewatchd.vision.embedder import create_embedder
from tests.support.daemon import SAMPLE_CLIP, make_config, run_daemon

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


class CountingDetector(YuNetDetector):
    made: list[CountingDetector] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        CountingDetector.made.append(self)

    def detect(self, frame: np.ndarray) -> list[Face]:
        self.calls += 1
        return super().detect(frame)


def until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_detection_goes_on_while_the_embedder_is_busy(tmp_path, monkeypatch):
    """While the one SFace network is busy, every camera's frames are still detected (up to the frames
    the tracking stage queues): on a shared pool, queued embeddings took every worker and all detection
    stopped, so several cameras dropped frames with a core idle."""
    held: list[HeldEmbedder] = []

    def embedder(config: Any) -> HeldEmbedder:
        held.append(HeldEmbedder(create_embedder(config)))
        return held[-1]

    monkeypatch.setattr(daemon_module, "create_embedder", embedder)
    monkeypatch.setattr(daemon_module, "YuNetDetector", CountingDetector)
    CountingDetector.made = []
    config = make_config(tmp_path / "state", *[SAMPLE_CLIP] * CAMERAS, device={"workers": 2})
    config = config.model_copy(update={"cameras": [c.model_copy(update={"fps": 5.0}) for c in config.cameras]})
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_daemon(config)), daemon=True)
    runner.start()
    try:
        assert until(lambda: bool(held) and held[0].entered.is_set(), 60), "no face was embedded"
        at_hold = [d.calls for d in CountingDetector.made]
        assert len(at_hold) == CAMERAS
        # each camera detects on until its tracking stage's queue is full (STAGE_QUEUE_SIZE frames)
        progressed = until(lambda: all(d.calls >= n + 2 for d, n in zip(CountingDetector.made, at_hold)), 20)
        calls = [d.calls for d in CountingDetector.made]
    finally:
        if held:
            held[0].release.set()
        runner.join(120)
    assert progressed, f"detection stopped while the embedder was busy: {at_hold} → {calls} detections"
    summary = result["summary"]
    assert summary.frames == CAMERAS * summary.frames // CAMERAS and summary.frames_dropped == 0
    assert summary.tracks >= CAMERAS and summary.embeds > 0
