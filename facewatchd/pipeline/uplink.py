"""Uplink: sends unknown faces to the resolver through the link, at least once, never twice on purpose.

Requests go into the durable outbox first; a sender task sends what is due. A request stays in the
outbox until the resolver's answer arrives (`acknowledge`); one that gets no answer in time is sent
again with exponential backoff (the resolver is idempotent by face id, so a resend is safe).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from dataclasses import dataclass

import cv2
import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.link.base import Link, LinkDown
from facewatchd.messages import MAX_CROP_BYTES, FaceQuery, MessageError
from facewatchd.outbox import Outbox
from facewatchd.vision.detector import Face

log = structlog.get_logger("facewatchd.uplink")

STORAGE_RETRY_MIN_S = 0.5  # the outbox's disk failed (full, I/O error): first retry
STORAGE_RETRY_MAX_S = 30.0


class UplinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    best_of_frames: int = Field(5, ge=1, le=100, description="frames of a new track to pick the best crop from")
    crop_margin: float = Field(0.3, ge=0, le=2, description="margin around the face box, as a fraction of it")
    crop_max_side: int = Field(320, ge=64, le=1024)
    crop_min_side: int = Field(96, ge=16, le=512, description="smaller crops are enlarged to this: Rekognition "
                               "refuses images under 80x80 pixels")
    jpeg_quality: int = Field(90, ge=30, le=100)
    answer_timeout_s: float = Field(10.0, gt=0, description="resend a request unanswered for this long")
    retry_max_s: float = Field(300.0, gt=0)
    outbox_max_rows: int = Field(10_000, ge=1)
    max_attempts: int = Field(30, ge=1, le=10_000, description="sends of one request before it is given up "
                              "(about 2 hours at the default backoff): the face is then seen anew")


def crop_with_margin(image: np.ndarray, face: Face, margin: float) -> np.ndarray:
    """The face box grown by `margin` on each side, clipped to the frame (a copy, never the frame)."""
    x, y, w, h = face.box
    x0, y0 = max(0, int(x - margin * w)), max(0, int(y - margin * h))
    x1, y1 = min(image.shape[1], int(x + w * (1 + margin))), min(image.shape[0], int(y + h * (1 + margin)))
    return image[y0:y1, x0:x1].copy()


def encode_jpeg(crop: np.ndarray, config: UplinkConfig) -> bytes:
    """JPEG small enough for one IoT message: downscaled to crop_max_side, quality lowered if needed, and
    enlarged to crop_min_side (a face far from the camera makes a crop smaller than a resolver accepts)."""
    shortest = min(crop.shape[:2])
    if 0 < shortest < config.crop_min_side:
        s = config.crop_min_side / shortest
        crop = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
    side = max(crop.shape[:2])
    if side > config.crop_max_side:
        s = config.crop_max_side / side
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    quality = config.jpeg_quality
    while True:
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        if len(buf) <= MAX_CROP_BYTES:
            return buf.tobytes()
        if quality > 30:
            quality -= 15
        else:  # still too large (a noisy crop): smaller, never over the limit
            crop = cv2.resize(crop, (max(1, crop.shape[1] * 3 // 4), max(1, crop.shape[0] * 3 // 4)),
                              interpolation=cv2.INTER_AREA)


def face_crop_jpeg(image: np.ndarray, face: Face, config: UplinkConfig) -> bytes:
    return encode_jpeg(crop_with_margin(image, face, config.crop_margin), config)


@dataclass
class UplinkStats:
    sent: int = 0  # first sends: one per unknown face
    resent: int = 0
    answered: int = 0
    expired: int = 0  # given up after max_attempts sends
    unresolvable: int = 0  # answered by the resolver with a refusal (a poison: no face, unreadable)


class Uplink:
    def __init__(self, link: Link, outbox: Outbox, config: UplinkConfig) -> None:
        self.link = link
        self.outbox = outbox
        self.config = config
        self.stats = UplinkStats()
        self.rejected: list[str] = []  # face ids dropped as unsendable, for the recognizer to forget
        self._wake = asyncio.Event()

    def submit(self, query: FaceQuery) -> list[str]:
        """Queue a request; returns the face ids of the oldest requests dropped to keep the outbox bounded."""
        dropped = self.outbox.put(query.face_id, query.to_json())
        if dropped:
            log.warning("outbox_full_dropped_oldest", dropped=len(dropped), total_dropped=self.outbox.dropped)
        self._wake.set()
        return dropped

    def take_rejected(self) -> list[str]:
        rejected, self.rejected = self.rejected, []
        return rejected

    def acknowledge(self, face_id: str) -> bool:
        found = self.outbox.remove(face_id)
        if found:
            self.stats.answered += 1
        return found

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def _backoff(self, attempts: int) -> float:
        base = min(self.config.answer_timeout_s * 2**attempts, self.config.retry_max_s)
        return base * random.uniform(0.8, 1.2)  # jitter, so devices that come back together spread out

    async def run(self, stop: asyncio.Event) -> None:
        storage_backoff = STORAGE_RETRY_MIN_S
        while not stop.is_set():
            try:
                await self._send_due()
                storage_backoff = STORAGE_RETRY_MIN_S
            except sqlite3.Error as e:  # a full or failing disk: keep trying, the outbox is on it
                log.error("outbox_unavailable", error=str(e), retry_in_s=storage_backoff)
                await asyncio.sleep(storage_backoff)
                storage_backoff = min(storage_backoff * 2, STORAGE_RETRY_MAX_S)
                continue
            next_due = self.outbox.next_due()
            delay = 1.0 if next_due is None else min(1.0, max(0.0, next_due - time.time()))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay if delay > 0 else 0.01)
            except TimeoutError:
                pass

    async def _send_due(self) -> None:
        now = time.time()
        for item in self.outbox.due(now):
            if item.attempts >= self.config.max_attempts:  # asked that often: the resolver will not answer
                self.outbox.remove(item.face_id)
                self.rejected.append(item.face_id)
                self.stats.expired += 1
                log.error("face_query_expired", face_id=item.face_id, attempts=item.attempts)
                continue
            try:
                await self.link.send_query(_query_payload(item.payload))
            except LinkDown as e:
                # Not an attempt: the request never left. Try again soon, when the link is back.
                self.outbox.postpone(item.face_id, now + 1.0)
                log.debug("uplink_offline", face_id=item.face_id, error=str(e))
                break
            except MessageError as e:  # can never be sent: keeping it would block the queue forever
                self.outbox.remove(item.face_id)
                self.rejected.append(item.face_id)
                log.error("face_query_unsendable", face_id=item.face_id, error=str(e))
                continue
            except Exception as e:  # anything else: back off and retry, never kill the sender
                self.outbox.attempted(item.face_id, now + self._backoff(item.attempts))
                log.error("face_query_send_failed", face_id=item.face_id, error=repr(e))
                continue
            if item.attempts == 0:
                self.stats.sent += 1
            else:
                self.stats.resent += 1
                log.info("face_query_resent", face_id=item.face_id, attempt=item.attempts + 1)
            self.outbox.attempted(item.face_id, now + self._backoff(item.attempts))


def _query_payload(payload: bytes) -> FaceQuery:
    return FaceQuery.from_json(payload)
