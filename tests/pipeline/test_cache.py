import time

import numpy as np
import pytest

from facewatchd.identity import IdentityConfig
from facewatchd.pipeline.cache import CacheConfig, FaceCache


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    w = v + noise * unit(1000 + seed)
    return (w / np.linalg.norm(w)).astype(np.float32)


def test_pending_then_resolved_then_matched(tmp_path):
    cache = FaceCache(tmp_path / "c.db")
    a = unit(1)
    assert cache.match(a) is None
    cache.add_pending("f1", a)
    hit = cache.match(near(a, 0.3))
    assert hit and hit.entry.pending and hit.entry.face_id == "f1"
    cache.resolve("f1", "person-1", None)
    hit = cache.match(near(a, 0.3))
    assert hit and hit.entry.person_id == "person-1" and not hit.entry.pending
    cache.rename("person-1", "Alice")
    assert cache.match(a).entry.name == "Alice"
    assert cache.match(unit(2)) is None


def test_persists_across_restart(tmp_path):
    cache = FaceCache(tmp_path / "c.db")
    cache.add_pending("f1", unit(1))
    cache.resolve("f1", "person-1", "Alice")
    cache.close()
    again = FaceCache(tmp_path / "c.db")
    hit = again.match(unit(1))
    assert hit and hit.entry.name == "Alice"


def test_evicts_least_recently_seen_and_old(tmp_path):
    cache = FaceCache(tmp_path / "c.db", CacheConfig(max_entries=3, max_age_days=1))
    now = time.time()
    for i in range(3):
        e = cache.add_pending(f"f{i}", unit(i), now=now + i)
        cache.resolve(f"f{i}", f"p{i}", None)
    cache.touch(cache.match(unit(0)).entry, now=now + 10)  # p0 is the most recent now
    cache.add_pending("f3", unit(3), now=now + 11)  # over the bound: p1 goes
    assert {e.person_id for e in cache.entries()} == {"p0", "p2", None}
    assert cache.evict(now=now + 2 * 86400) == 3  # all three are older than a day by then
    assert len(cache) == 0


def test_several_views_per_person_bounded(tmp_path):
    cache = FaceCache(tmp_path / "c.db", CacheConfig(views_per_person=3, new_view_below=0.9))
    cache.add_pending("f", unit(1))
    cache.resolve("f", "p", "Bob")
    assert not cache.add_view("p", "Bob", unit(1))  # the same view: not kept
    for i in range(5):
        assert cache.add_view("p", "Bob", near(unit(1), 0.7, seed=i))  # another angle (cosine about 0.8)
    views = [e for e in cache.entries() if e.person_id == "p"]
    assert len(views) == 3
    # The view the resolver answered stays: the learnt views were verified against it, and it is the
    # resolver's own template, so dropping it first would send the same face to the resolver again.
    assert [e.face_id for e in views if e.face_id] == ["f"]
    hit = cache.match(unit(1))
    assert hit is not None and hit.similarity > 0.99


def test_a_view_that_does_not_verify_strongly_is_never_learnt(tmp_path):
    # Tailgating: another face followed under Bob's track must not become a view of Bob.
    cache = FaceCache(tmp_path / "c.db")
    cache.add_pending("f", unit(1))
    cache.resolve("f", "p", "Bob", similarity=0.9)
    stranger = unit(2)
    assert not cache.add_view("p", "Bob", stranger)
    between = near(unit(1), 1.2)  # cosine about 0.64 to Bob's view: above naming, below learning?
    sim = float(between @ unit(1))
    assert cache.add_view("p", "Bob", between) == (sim >= cache.identity.learn_threshold)
    assert cache.match(stranger) is None


def test_evidence_never_exceeds_the_trust_of_the_view_it_matched(tmp_path):
    cache = FaceCache(tmp_path / "c.db")
    cache.add_pending("f", unit(1))
    cache.resolve("f", "p", "Bob", similarity=0.48)  # the resolver named this view at 0.48
    similarity, evidence = cache.similarity("p", unit(1))
    assert similarity > 0.99 and evidence == pytest.approx(0.48)
    learnt_nothing = not cache.add_view("p", "Bob", near(unit(1), 0.7))  # 0.48 < learn_threshold: nothing learnt
    assert learnt_nothing


def test_naming_threshold_rises_with_the_persons_cached(tmp_path):
    # A floor of 0.42 (the default is 0.50, and 0.52 is as high as the default goes): the rise shows from 0.42
    cache = FaceCache(":memory:", CacheConfig(max_entries=5000), IdentityConfig(name_threshold=0.42))
    probe = unit(1)
    face = near(probe, 1.9)  # cosine about 0.47 to the probe
    sim = float(face @ probe)
    assert 0.44 < sim < 0.5, sim
    cache.add_pending("f", face)
    cache.resolve("f", "p", "Bob")
    assert cache.match(probe) is not None  # one person: 0.42 names it
    for i in range(2000):  # 2,000 more persons: the threshold rises above this similarity
        cache.add_pending(f"g{i}", unit(100 + i))
        cache.resolve(f"g{i}", f"q{i}", None)
    assert cache.identity.naming_threshold(cache.comparisons()) > sim
    assert cache.match(probe) is None


def test_reject_and_merge(tmp_path):
    cache = FaceCache(tmp_path / "c.db", CacheConfig(new_view_below=0.9))
    cache.add_pending("f", unit(1))
    cache.resolve("f", "p", "Bob", similarity=1.0)
    assert cache.add_view("p", "Bob", near(unit(1), 0.7))  # learnt from f's view
    cache.add_pending("g", unit(2))
    cache.resolve("g", "q", None)
    assert cache.merge("q", "p", "Bob") == 1
    assert cache.match(unit(2)).entry.person_id == "p"
    assert cache.reject("f") == 2  # f's own view and the view learnt from it
    assert cache.match(unit(1)) is None and cache.match(unit(2)) is not None


def test_forget(tmp_path):
    cache = FaceCache(tmp_path / "c.db")
    cache.add_pending("f", unit(1))
    cache.resolve("f", "p", "Bob")
    assert cache.forget("p") == 1
    assert cache.match(unit(1)) is None


def test_match_is_vectorised_over_10000_entries(tmp_path):
    cache = FaceCache(":memory:", CacheConfig(max_entries=10_000))
    rng = np.random.default_rng(0)
    m = rng.normal(size=(10_000, 128)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    for i, v in enumerate(m):
        cache.add_pending(f"f{i}", v, now=1.0 + i)
    hit = cache.match(near(m[1234], 0.2))
    assert hit and hit.entry.face_id == "f1234"
