"""The uplink's durability rules with the real outbox (SQLite): requests nobody answers expire, a refusal
from the resolver ends a request at once, and a failing disk is retried, never fatal."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from facewatchd.app.config import parse_config
from facewatchd.app.device import Daemon
from facewatchd.link.local import LocalLink, ShadowHub
from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.outbox import Outbox
from facewatchd.pipeline.uplink import Uplink, UplinkConfig
from facewatchd.shadow.store import ShadowStore
from tests.plugins.support import eventually
from tests.support.daemon import FIXTURES


def a_query() -> FaceQuery:
    return FaceQuery(new_face_id(), "door", "cam", "t1", (FIXTURES / "obama.jpg").read_bytes()[:2000],
                     np.ones(128, np.float32) / np.sqrt(128), 1.0)


def never_answered(tmp_path: Path, sent: list[str]) -> LocalLink:
    async def resolve(query: FaceQuery) -> None:
        sent.append(query.face_id)  # a resolver that takes the request and never answers

    return LocalLink("door", ShadowHub(ShadowStore(tmp_path / "shadow.db")), resolve)


async def test_a_request_nobody_answers_expires_after_max_attempts(tmp_path: Path) -> None:
    sent: list[str] = []
    outbox = Outbox(tmp_path / "outbox.db")
    uplink = Uplink(never_answered(tmp_path, sent), outbox,
                    UplinkConfig(answer_timeout_s=0.01, retry_max_s=0.02, max_attempts=3))
    query = a_query()
    uplink.submit(query)
    stop = asyncio.Event()
    async with uplink.link:
        task = asyncio.create_task(uplink.run(stop))
        await eventually(lambda: uplink.stats.expired == 1, 10, what="the request to expire")
        stop.set()
        await task
    assert sent == [query.face_id] * 3 and len(outbox) == 0  # three sends, then given up: not forever
    assert uplink.take_rejected() == [query.face_id]  # for the recognizer: the next sighting asks anew


async def test_a_refusal_from_the_resolver_ends_the_request(tmp_path: Path) -> None:
    """`desired.faces.<id>.unresolvable`, as the resolver answers a crop with no face: the daemon drops the
    request and counts it, instead of resending it every few minutes for ever."""
    config = parse_config({"device": {"state_dir": str(tmp_path)}})
    daemon = Daemon(config)
    from facewatchd.pipeline.cache import FaceCache
    from facewatchd.pipeline.recognizer import Recognizer
    from facewatchd.vision.embedder import SFaceEmbedder

    sent: list[str] = []
    outbox = Outbox(tmp_path / "outbox.db")
    uplink = Uplink(never_answered(tmp_path, sent), outbox, UplinkConfig())
    cache = FaceCache(tmp_path / "cache.db")
    daemon.recognizer = Recognizer("door", SFaceEmbedder(), cache, uplink, UplinkConfig(), None,  # type: ignore
                                   lambda hook, **kw: None)
    query = a_query()
    uplink.submit(query)
    cache.add_pending(query.face_id, query.embedding)  # type: ignore[arg-type]
    clear, _ = daemon.apply_delta({"faces": {query.face_id: {"unresolvable": "no_face: no face in the crop"}}})
    assert clear == {"faces": {query.face_id: None}}  # cleared from the shadow like any answer
    assert len(outbox) == 0 and cache.pending_faces() == set() and uplink.stats.unresolvable == 1
    cache.close()


class FailingDisk:
    """The real outbox, whose disk fails (as when it is full) for the first few calls."""

    def __init__(self, outbox: Outbox, failures: int) -> None:
        self._outbox, self.failures = outbox, failures

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._outbox, name)
        if name in ("due", "next_due") and self.failures > 0:
            def failing(*args: Any, **kwargs: Any) -> Any:
                self.failures -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return failing
        return attr

    def __len__(self) -> int:
        return len(self._outbox)


async def test_a_full_disk_is_retried_and_the_request_still_goes_out(tmp_path: Path) -> None:
    sent: list[str] = []
    outbox = Outbox(tmp_path / "outbox.db")
    query = a_query()
    outbox.put(query.face_id, query.to_json())
    uplink = Uplink(never_answered(tmp_path, sent), FailingDisk(outbox, failures=3), UplinkConfig())  # type: ignore
    stop = asyncio.Event()
    async with uplink.link:
        task = asyncio.create_task(uplink.run(stop))
        await eventually(lambda: sent == [query.face_id], 20, what="the request to go out once the disk is back")
        assert not task.done()  # the sender survived the failing disk
        stop.set()
        await task


def test_a_small_crop_is_enlarged_to_what_a_resolver_accepts() -> None:
    import cv2

    from facewatchd.pipeline.uplink import encode_jpeg

    face = cv2.imread(str(FIXTURES / "obama.jpg"))
    tiny = cv2.resize(face, (38, 44), interpolation=cv2.INTER_AREA)  # a face far from the camera
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(tiny, UplinkConfig()), np.uint8), cv2.IMREAD_COLOR)
    assert min(decoded.shape[:2]) == 96 and decoded.shape[1] == round(38 * 96 / 38)  # Rekognition wants >= 80
    large = encode_jpeg(cv2.resize(face, (600, 700)), UplinkConfig())
    assert max(cv2.imdecode(np.frombuffer(large, np.uint8), cv2.IMREAD_COLOR).shape[:2]) == 320


async def test_an_unsendable_request_is_dropped_not_retried_for_ever(tmp_path: Path) -> None:
    """A row that can never be sent (here: a crop over the message limit, written by an older version)
    would block the queue: it is dropped and handed back, and the next request still goes out."""
    import base64
    import json

    sent: list[str] = []
    outbox = Outbox(tmp_path / "outbox.db")
    broken = json.loads(a_query().to_json())
    broken["crop"] = base64.b64encode(b"\xff\xd8" + b"\x00" * (120 * 1024)).decode()
    outbox.put(broken["face_id"], json.dumps(broken).encode(), now=1.0)
    good = a_query()
    outbox.put(good.face_id, good.to_json(), now=2.0)
    uplink = Uplink(never_answered(tmp_path, sent), outbox, UplinkConfig())
    stop = asyncio.Event()
    async with uplink.link:
        task = asyncio.create_task(uplink.run(stop))
        await eventually(lambda: sent == [good.face_id], 10, what="the good request")
        stop.set()
        await task
    assert uplink.take_rejected() == [broken["face_id"]] and broken["face_id"] not in outbox
