#!/usr/bin/env python3
"""FaceCache.match time with a full cache (10,000 entries by default, the configured maximum).

Three kinds of lookup, each timed over many calls (median, 99th percentile): a face that is in the
cache, a face that is not (the whole matrix scanned, nothing above the threshold), and a face seen
in the same frame as others (the co-visibility path that skips their persons and pending faces).
Embeddings are random unit vectors: only the arithmetic matters here. Target: median < 1 ms.
The product is small (10,000 x 128): with OpenBLAS's threads on a busy 2-core machine its tail grows
from about 0.2 ms to over 10 ms, so run it also with OPENBLAS_NUM_THREADS=1 (`make bench` does both).

    .venv/bin/python bench/cache_match.py [--entries 10000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from facewatchd.pipeline.cache import CacheConfig, FaceCache
from facewatchd.vision.embedding import EMBEDDING_DIM

TARGET_MS = 1.0


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def filled_cache(path: Path, vectors: np.ndarray, persons: int, config: CacheConfig) -> tuple[FaceCache, list[str]]:
    """A cache as a restart finds it: rows written to its SQLite file, then loaded by FaceCache itself.
    `persons` people with several views each; one entry in ten still pending (no person yet)."""
    FaceCache(path, config).close()  # creates the schema
    ids = [f"person-{i:06d}" for i in range(persons)]
    now = time.time()
    rows = [(uuid.uuid4().hex, None if i % 10 == 0 else ids[i % persons], None, face_id,
             v.astype(np.float32).tobytes(), now, now, 0.0 if i % 10 == 0 else 1.0, face_id)
            for i, (v, face_id) in enumerate((v, uuid.uuid4().hex) for v in vectors)]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO entries (id, person_id, name, face_id, embedding, created, last_seen, trust, "
                       "origin) VALUES (?,?,?,?,?,?,?,?,?)", rows)
    return FaceCache(path, config), ids


def timed(calls: int, fn) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        fn(i)
        samples[i] = time.perf_counter() - t
    ms = samples * 1000
    return {"median_ms": round(float(np.median(ms)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    vectors = unit_rows(rng, args.entries)
    with tempfile.TemporaryDirectory(prefix="cache-match-") as tmp:
        started = time.perf_counter()
        cache, persons = filled_cache(Path(tmp) / "cache.db", vectors, max(1, args.entries // 4),
                                      CacheConfig(max_entries=args.entries))
        load_s = time.perf_counter() - started
        try:
            result = measure(cache, vectors, persons, args.calls, rng)
        finally:
            cache.close()
    result["load_s"] = round(load_s, 2)
    result["openblas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"FaceCache.match with {result['entries']} entries, {args.calls} calls each, "
          f"OPENBLAS_NUM_THREADS={result['openblas_threads']}")
    print(f"{'lookup':<12}{'median ms':>11}{'p99 ms':>9}{'mean ms':>9}")
    for key in ("known", "unknown", "co_visible"):
        m = result[key]
        print(f"{key:<12}{m['median_ms']:>11.3f}{m['p99_ms']:>9.3f}{m['mean_ms']:>9.3f}")
    print(json.dumps(result))


def measure(cache: FaceCache, vectors: np.ndarray, persons: list[str], calls: int,
            rng: np.random.Generator) -> dict[str, object]:
    if len(cache) != len(vectors):
        raise SystemExit(f"cache holds {len(cache)} entries, expected {len(vectors)}")
    entries = len(vectors)

    noise = unit_rows(rng, calls) * 0.3
    known = vectors[rng.integers(0, entries, calls)] + noise
    known /= np.linalg.norm(known, axis=1, keepdims=True)
    unknown = unit_rows(rng, calls)
    others = [set(rng.choice(persons, 2).tolist()) for _ in range(calls)]
    pending_faces = sorted(e.face_id for e in cache.entries() if e.pending and e.face_id)
    other_faces = [{pending_faces[int(rng.integers(len(pending_faces)))]} if pending_faces else set()
                   for _ in range(calls)]

    checked = min(100, calls)
    result: dict[str, object] = {
        "entries": len(cache), "calls": calls,
        "known_hit_rate": round(sum(cache.match(known[i]) is not None for i in range(checked)) / checked, 2),
        "unknown_hit_rate": round(sum(cache.match(unknown[i]) is not None for i in range(checked)) / checked, 2),
        "known": timed(calls, lambda i: cache.match(known[i])),
        "unknown": timed(calls, lambda i: cache.match(unknown[i])),
        "co_visible": timed(calls, lambda i: cache.match(known[i], not_persons=others[i], not_faces=other_faces[i])),
    }
    result["target_median_lt_1ms"] = all(result[k]["median_ms"] < TARGET_MS  # type: ignore[index]
                                         for k in ("known", "unknown", "co_visible"))
    return result


if __name__ == "__main__":
    main()
