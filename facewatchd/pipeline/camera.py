"""Camera sources through OpenCV: video file, directory of images, V4L2 device index, RTSP/HTTP URL.

Reading runs off the event loop. A live source (device, URL) or a file paced in real time is read
continuously by its own capture thread into a one-frame slot: when the pipeline is slower than the
camera the stale frame is dropped (latest frame wins) and counted. A file read "asap" is read frame by
frame on demand, so nothing is dropped and runs are reproducible. A live source that fails is reopened
with exponential backoff; a file source ends the run cleanly (or loops, by config).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Literal, Protocol

import cv2
import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.vision.analyzer import ImageError, read_image

log = structlog.get_logger("facewatchd.camera")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    source: str | int = Field(description="video file, image directory, V4L2 index, or rtsp/http URL")
    fps: float | None = Field(None, gt=0, description="cap on frames per second taken from the source")
    pace: Literal["asap", "realtime"] = Field("asap", description="files only: read as fast as the pipeline "
                                              "takes frames, or at the video's own rate (dropping stale frames)")
    loop: bool = Field(False, description="files only: start again at the end instead of ending the run")
    reopen_min_s: float = Field(0.5, gt=0)
    reopen_max_s: float = Field(30.0, gt=0)
    start_timeout_s: float = Field(60.0, ge=0, description="`run` fails (exit 69) when the camera has given no "
                                   "frame this long after start; 0: wait for ever")


@dataclass(slots=True)
class Frame:
    camera: str
    index: int
    ts: float  # seconds: the source's own timestamp for files, wall clock for live sources
    image: np.ndarray


@dataclass
class CameraStats:
    frames: int = 0
    dropped: int = 0
    unreadable: int = 0  # corrupt images and failed reads that were skipped
    gated: int = 0  # frames not detected: nothing moved in an empty scene (pipeline.motion)
    reopens: int = 0


class Reader(Protocol):
    def read(self) -> tuple[np.ndarray | None, float] | None:
        """Next (image or None if this one is unreadable, timestamp), or None at the end."""

    def close(self) -> None: ...


class SourceError(RuntimeError):
    """The source cannot be opened."""


class VideoReader:
    def __init__(self, source: str | int) -> None:
        self.source = source
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise SourceError(f"cannot open video source {source!r}")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or 0.0

    def read(self) -> tuple[np.ndarray | None, float] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None  # end of file, or a truncated file's last readable frame; live sources reopen
        return image, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def close(self) -> None:
        self._cap.release()


class ImageDirReader:
    """The images of a directory (or one image file), in name order."""

    def __init__(self, path: Path) -> None:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise SourceError(f"no images in {path}")
        self._files = iter(files)
        self._n = 0
        self.fps = 0.0

    def read(self) -> tuple[np.ndarray | None, float] | None:
        path = next(self._files, None)
        if path is None:
            return None
        self._n += 1
        try:
            image: np.ndarray | None = read_image(path)
        except ImageError as e:  # corrupt, or too large to decode safely: skipped and counted
            log.warning("image_unreadable", path=str(path), error=str(e))
            image = None
        return image, float(self._n)

    def close(self) -> None:
        pass


def is_live(source: str | int) -> bool:
    return isinstance(source, int) or str(source).startswith(("rtsp://", "rtsps://", "http://", "https://", "/dev/"))


def open_reader(source: str | int) -> Reader:
    if is_live(source):
        return VideoReader(source)
    path = Path(str(source))
    if not path.exists():
        raise SourceError(f"no such file or directory: {path}")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageDirReader(path)
    return VideoReader(str(path))


class LatestFrameSlot:
    """A one-frame buffer between a capture thread and the loop: a new frame replaces an unread one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: CameraStats) -> None:
        self._loop = loop
        self._stats = stats
        self._frame: Frame | None = None
        self._closed = False
        self._ready = asyncio.Event()

    def put_threadsafe(self, frame: Frame | None) -> None:
        self._loop.call_soon_threadsafe(self._put, frame)

    def _put(self, frame: Frame | None) -> None:
        if frame is None:
            self._closed = True
        else:
            if self._frame is not None:
                self._stats.dropped += 1
            self._frame = frame
        self._ready.set()

    async def get(self) -> Frame | None:
        while self._frame is None and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


@dataclass
class Camera:
    config: CameraConfig
    stats: CameraStats = field(default_factory=CameraStats)

    @property
    def live(self) -> bool:
        return is_live(self.config.source)

    async def frames(self, stop: asyncio.Event) -> AsyncIterator[Frame]:
        if self.live or self.config.pace == "realtime":
            async for frame in self._threaded(stop):
                yield frame
        else:
            async for frame in self._on_demand(stop):
                yield frame

    async def _on_demand(self, stop: asyncio.Event) -> AsyncIterator[Frame]:
        index = 0
        min_gap = 1.0 / self.config.fps if self.config.fps else 0.0
        last_ts = -1e9
        while not stop.is_set():
            try:
                reader = await asyncio.to_thread(open_reader, self.config.source)
            except SourceError as e:
                log.error("camera_unavailable", camera=self.config.id, error=str(e))
                return
            try:
                while not stop.is_set():
                    item = await asyncio.to_thread(reader.read)
                    if item is None:
                        break
                    image, ts = item
                    if image is None:
                        self.stats.unreadable += 1
                        continue
                    if ts - last_ts < min_gap:
                        continue
                    last_ts = ts
                    index += 1
                    self.stats.frames += 1
                    yield Frame(self.config.id, index, ts, image)
            finally:
                reader.close()
            if not self.config.loop:
                return
            log.info("camera_looped", camera=self.config.id, frames=self.stats.frames)
            last_ts = -1e9

    async def _threaded(self, stop: asyncio.Event) -> AsyncIterator[Frame]:
        slot = LatestFrameSlot(asyncio.get_running_loop(), self.stats)
        halt = threading.Event()
        thread = threading.Thread(target=self._capture, args=(slot, halt), name=f"camera-{self.config.id}",
                                  daemon=True)
        thread.start()
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(slot.get())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    break
                frame = getter.result()
                if frame is None:
                    break
                yield frame
        finally:
            halt.set()
            await asyncio.to_thread(thread.join, 5.0)

    def _capture(self, slot: LatestFrameSlot, halt: threading.Event) -> None:
        """Capture thread: read continuously, hand the latest frame over, reopen a failed live source."""
        backoff = self.config.reopen_min_s
        index = 0
        while not halt.is_set():
            try:
                reader = open_reader(self.config.source)
            except SourceError as e:
                if not self.live:
                    log.error("camera_unavailable", camera=self.config.id, error=str(e))
                    break
                log.warning("camera_reopen", camera=self.config.id, error=str(e), retry_in_s=round(backoff, 2))
                self.stats.reopens += 1
                halt.wait(backoff)
                backoff = min(backoff * 2, self.config.reopen_max_s)
                continue
            # A video plays at its own rate (the fps cap then skips frames); images have none, so fps paces them,
            # and their due time is their timestamp (not their number, which would make each one a second long).
            timed_by_pace = not self.live and not getattr(reader, "fps", 0.0)
            period = 1.0 / (getattr(reader, "fps", 0.0) or self.config.fps or 30.0)
            # the cap skips frames, never slows; images paced by fps itself have nothing to skip
            min_gap = 1.0 / self.config.fps if self.config.fps and not timed_by_pace else 0.0
            started = time.monotonic()
            last_ts = -1e9
            n = 0
            try:
                while not halt.is_set():
                    item = reader.read()
                    if item is None:
                        break
                    image, ts = item
                    n += 1
                    if not self.live:  # a file paced in real time: wait for the frame's due time
                        halt.wait(max(0.0, started + n * period - time.monotonic()))
                    if timed_by_pace:
                        ts = n * period
                    if image is None:
                        self.stats.unreadable += 1
                        continue
                    backoff = self.config.reopen_min_s
                    ts = ts if not self.live else time.time()
                    if ts - last_ts < min_gap:
                        continue
                    last_ts = ts
                    index += 1
                    self.stats.frames += 1
                    slot.put_threadsafe(Frame(self.config.id, index, ts, image))
            finally:
                reader.close()
            if self.live:
                log.warning("camera_lost", camera=self.config.id, retry_in_s=round(backoff, 2))
                self.stats.reopens += 1
                halt.wait(backoff)
                backoff = min(backoff * 2, self.config.reopen_max_s)
            elif not self.config.loop:
                break
        slot.put_threadsafe(None)
