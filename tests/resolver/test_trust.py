"""Trust boundaries of the resolver: no device's numbers are trusted. A device sends a crop; the resolver
finds and embeds the face itself, so a made-up embedding names nobody and is never learnt."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.messages import FaceQuery, clamp_similarity, new_face_id
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.vision.analyzer import FaceAnalyzer
from tests.support.daemon import FIXTURES

OBAMA = "Barack Obama"


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def honest(analyzer: FaceAnalyzer, image: np.ndarray, thing: str = "door-1") -> FaceQuery:
    face = analyzer.largest(image)
    assert face is not None
    return FaceQuery(new_face_id(), thing, "cam", "t1", face_crop_jpeg(image, face.face, UplinkConfig()),
                     face.embedding, time.time())


async def test_a_made_up_embedding_names_nobody_and_is_never_learnt(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    try:
        resolver = backend.resolver
        obama_photo = cv2.imread(str(FIXTURES / "obama.jpg"))
        obama = (await resolver.enroll(OBAMA, [honest(analyzer, obama_photo)])).person
        obama_embedding = analyzer.largest(obama_photo).embedding
        solvay = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
        strangers = analyzer.faces(solvay)
        assert len(strangers) >= 25
        attacker = strangers[0]
        # A compromised device (its own certificate and topic, as the ACL allows) sends the attacker's crop
        # with an embedding it made up: 50 x normalise(Obama + attacker).
        forged = obama_embedding + attacker.embedding
        forged = 50 * forged / np.linalg.norm(forged)
        crop = face_crop_jpeg(solvay, attacker.face, UplinkConfig())
        answer = await resolver.resolve(FaceQuery(new_face_id(), "evil-cam", "cam", "t9", crop, forged, time.time()))
        assert answer.name is None and answer.person_id != obama.person_id
        assert -1.0 <= answer.similarity <= 1.0
        assert (await backend.stores.names.get(obama.person_id)).templates == 1  # nothing learnt into Obama
        # and the strangers of the Solvay photo are not named Obama afterwards (24 of 29 were)
        named = [s for s in strangers
                 if (await resolver.identify(honest(analyzer, solvay[int(max(0, s.face.box[1] - 60)):
                                                                     int(s.face.box[1] + s.face.box[3] + 60),
                                                                     int(max(0, s.face.box[0] - 60)):
                                                                     int(s.face.box[0] + s.face.box[2] + 60)]))
                     ).person_id == obama.person_id]
        assert named == []
    finally:
        backend.close()


async def test_the_resolver_embeds_the_crop_not_the_devices_numbers(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    try:
        photo = cv2.imread(str(FIXTURES / "obama.jpg"))
        person = (await backend.resolver.enroll(OBAMA, [honest(analyzer, photo)])).person
        # an honest crop of Obama with a random embedding: still Obama, by the crop's own face
        q = honest(analyzer, cv2.imread(str(FIXTURES / "obama2.jpg")))
        noise = np.random.default_rng(0).normal(size=q.embedding.shape).astype(np.float32)
        answer = await backend.resolver.resolve(FaceQuery(q.face_id, q.thing, q.camera, q.track, q.crop_jpeg,
                                                          noise / np.linalg.norm(noise), q.ts))
        assert answer.person_id == person.person_id and answer.name == OBAMA and 0.5 <= answer.similarity <= 1.0
    finally:
        backend.close()


def test_similarities_are_clamped_where_they_cross_a_boundary(tmp_path: Path) -> None:
    assert clamp_similarity(37.04) == 1.0 and clamp_similarity(-5) == -1.0 and clamp_similarity(0.42) == 0.42
    assert clamp_similarity(float("nan")) == 0.0 and clamp_similarity(float("inf")) == 0.0
    assert clamp_similarity("0.9") == 0.0 and clamp_similarity(True) == 0.0  # not a number: no evidence
    # An answer in the device's shadow claiming similarity 37.04 (a forged or corrupted label) names the waiting
    # track, but the evidence the door counts is at most 1.
    from facewatchd.app.config import parse_config
    from facewatchd.app.device import Daemon
    from facewatchd.outbox import Outbox
    from facewatchd.pipeline.cache import FaceCache
    from facewatchd.pipeline.recognizer import Recognizer
    from facewatchd.pipeline.tracker import Track
    from facewatchd.pipeline.uplink import Uplink
    from facewatchd.vision.detector import Face
    from facewatchd.vision.embedder import SFaceEmbedder
    from tests.pipeline.test_uplink import a_query, never_answered

    daemon = Daemon(parse_config({"device": {"state_dir": str(tmp_path)}}))
    cache, outbox = FaceCache(tmp_path / "cache.db"), Outbox(tmp_path / "outbox.db")
    uplink = Uplink(never_answered(tmp_path, []), outbox, UplinkConfig())
    events: list = []
    daemon.recognizer = rec = Recognizer("door", SFaceEmbedder(), cache, uplink, UplinkConfig(), None,  # type: ignore
                                         lambda hook, **kw: events.append(kw.get("event")))
    query = a_query()
    uplink.submit(query)
    cache.add_pending(query.face_id, query.embedding)  # type: ignore[arg-type]
    track = Track("cam-1", "cam", Face((0, 0, 100, 100), np.zeros((5, 2), np.float32), 0.9), 1, 1, 1.0, 1.0,
                  state="pending", face_id=query.face_id)
    rec._live[track.id] = track  # the track that asked, still in view
    daemon.apply_delta({"faces": {query.face_id: {"person_id": "person-1", "name": OBAMA, "similarity": 37.04}}})
    assert track.name == OBAMA and track.similarity == 1.0 and [s for _, s in track.evidence] == [1.0]
    assert events and all(e.similarity <= 1.0 and all(s <= 1.0 for _, s in e.evidence) for e in events)
    cache.close()
    outbox.close()
