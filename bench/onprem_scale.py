#!/usr/bin/env python3
"""Several on-prem resolver workers on PostgreSQL + pgvector behind one mosquitto: throughput, what a killed
worker loses, races that split a person, and how a search grows with the collection.

Setup, all real and on this machine: PostgreSQL 16 + pgvector (the pgserver wheel) and mosquitto on free
loopback ports, N `facewatchd resolver` processes sharing `$share/resolvers/…`, and simulated devices (the
real MQTT link, outbox and uplink, tests/support/devices.py) sending real crops of LFW-dev faces. Each of
--faces people is sent by two doors at once (the same crop, two face ids), so two workers meet every new
person at the same moment: a duplicate person is one such pair answered with two person ids.

The collection is first filled with --persons synthetic persons (random unit vectors: no real face comes
near one, but every search walks them and the naming threshold rises with them). With --kill-one the first
worker gets SIGKILL once a third of the answers are in; the devices' outboxes resend what it took.

--search-sizes times the collection's search alone (the PostgreSQL adapter's HNSW `<=>` against the SQLite
matrix) at each size, with real LFW embeddings as probes.

    .venv/bin/python bench/onprem_scale.py --workers 1,2 --faces 60          # throughput, 1 against 2 workers
    .venv/bin/python bench/onprem_scale.py --workers 3 --kill-one --faces 60  # losses and duplicates
    .venv/bin/python bench/onprem_scale.py --workers 0 --search-sizes 1000,10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facewatchd.messages import FaceQuery, new_face_id  # noqa: E402
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg  # noqa: E402
from facewatchd.resolver.local import LocalResolverStores  # noqa: E402
from facewatchd.resolver.postgres.config import PostgresResolverConfig  # noqa: E402
from facewatchd.resolver.postgres.server import LocalPostgres  # noqa: E402
from facewatchd.resolver.postgres.stores import PostgresResolverStores  # noqa: E402
from facewatchd.vision.analyzer import FaceAnalyzer  # noqa: E402
from facewatchd.vision.embedding import EMBEDDING_DIM  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402
from tests.support.devices import SimulatedDevice, all_answered  # noqa: E402
from tests.support.postgres import fresh_database  # noqa: E402
from tests.support.workers import Worker  # noqa: E402


def lfw_faces(images: Path, count: int) -> list[tuple[bytes, np.ndarray]]:
    """A device's crop and the SFace embedding of the first photo of `count` LFW people."""
    analyzer, out = FaceAnalyzer(), []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        image = cv2.imread(str(sorted(person.glob("*.jpg"))[0]))
        face = analyzer.largest(image) if image is not None else None
        if face is not None:
            out.append((face_crop_jpeg(image, face.face, UplinkConfig()), face.embedding))
        if len(out) == count:
            break
    return out


def lfw_mates(images: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The SFace embeddings of the first two photos of `count` LFW people who have two or more."""
    analyzer, out = FaceAnalyzer(), []
    for person in sorted(p for p in images.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))[:2]
        if len(photos) < 2:
            continue
        faces = [analyzer.largest(image) if (image := cv2.imread(str(p))) is not None else None for p in photos]
        if all(faces):
            out.append((faces[0].embedding, faces[1].embedding))  # type: ignore[union-attr]
        if len(out) == count:
            break
    return out


def random_units(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, EMBEDDING_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def preload_postgres(dsn: str, vectors: np.ndarray) -> None:
    """Synthetic persons, one template each, written with COPY (the schema is migrated before); the HNSW index
    is built once after the rows are in, as a bulk load should (row by row it costs about 10 ms each here)."""
    now = time.time()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        definition = cur.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'collection_embedding'").fetchone()[0]
        cur.execute("DROP INDEX collection_embedding")
        cur.execute("SET maintenance_work_mem = '512MB'")  # the graph of 100,000 templates fits: a fast build
        with cur.copy("COPY collection (face_ref, person_id, embedding, created) FROM STDIN") as copy:
            for i, v in enumerate(vectors):
                copy.write_row((f"synthetic-{i}", f"person-synthetic-{i}", "[" + ",".join(f"{x:.6f}" for x in v) + "]",
                                now))
        with cur.copy("COPY persons (person_id, first_seen, last_seen) FROM STDIN") as copy:
            for i in range(len(vectors)):
                copy.write_row((f"person-synthetic-{i}", now, now))
        cur.execute(definition)


def preload_sqlite(stores: LocalResolverStores, vectors: np.ndarray) -> None:
    now = time.time()
    stores.db.run(lambda c: c.executemany("INSERT INTO collection VALUES (?,?,?,?)",
                                          ((f"synthetic-{i}", f"person-synthetic-{i}", v.tobytes(), now)
                                           for i, v in enumerate(vectors))))


async def migrate(dsn: str) -> None:
    async with PostgresResolverStores(PostgresResolverConfig(dsn=dsn), lambda _: None):
        pass


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def search_times(server: LocalPostgres, faces: list[tuple[bytes, np.ndarray]], sizes: list[int],
                       probes: int, mates: list[tuple[np.ndarray, np.ndarray]],
                       ef_search: int | None = None) -> list[dict[str, Any]]:
    """The collection's search alone, PostgreSQL (HNSW) against SQLite (one matrix product), at each size, and
    how often the approximate index finds what the exact matrix finds: for strangers (their nearest synthetic
    person), and for mated probes (a second photo of someone whose first photo is in the collection)."""
    rows = []
    queries = [FaceQuery(new_face_id(), "door", "cam", "t", crop, emb, 0.0) for crop, emb in faces[:probes]]
    mated = [FaceQuery(new_face_id(), "door", "cam", "t", b"", second, 0.0) for _, second in mates]
    for size in sizes:
        # the mates' first photos go in last: synthetic-<size + j> is mated probe j's own face
        vectors = np.vstack([random_units(size, seed=size), *(first[None, :] for first, _ in mates)])
        dsn = fresh_database(server)
        await migrate(dsn)
        started = time.perf_counter()
        preload_postgres(dsn, vectors)
        load_s = time.perf_counter() - started
        row: dict[str, Any] = {"size": size, "postgres_load_s": round(load_s, 1)}
        config = PostgresResolverConfig(dsn=dsn, **({"hnsw_ef_search": ef_search} if ef_search else {}))
        async with PostgresResolverStores(config, lambda _: None) as pg:
            row["postgres"] = await timed(pg.collection, queries)
            approximate = [await pg.collection.search(q, -1.0) for q in queries + mated]
        folder = Path(tempfile.mkdtemp(prefix="onprem-scale-sqlite-"))
        try:
            local = LocalResolverStores(folder, lambda _: None)
            preload_sqlite(local, vectors)
            await local.collection.search(queries[0], 0.5)  # the matrix is loaded once, then kept
            row["sqlite"] = await timed(local.collection, queries)
            exact = [await local.collection.search(q, -1.0) for q in queries + mated]
            # HNSW is approximate: the share of strangers whose nearest face it finds (the matrix is exact) ...
            row["postgres"]["recall_at_1"] = round(sum(a is not None and e is not None and a.face_ref == e.face_ref
                                                       for a, e in zip(approximate[:len(queries)], exact))
                                               / len(queries), 3)
            # ... and of mated probes that find their own person's face, in each
            own = [f"synthetic-{size + j}" for j in range(len(mated))]
            for key, found in (("postgres", approximate), ("sqlite", exact)):
                row[key]["mated_found"] = round(sum(m is not None and m.face_ref == ref for m, ref in
                                                    zip(found[len(queries):], own)) / max(1, len(mated)), 3)
            local.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        rows.append(row)
        print(f"search at {size:>7} persons: PostgreSQL p50 {row['postgres']['p50_ms']:6.2f} ms "
              f"p95 {row['postgres']['p95_ms']:6.2f} ms · SQLite matrix p50 {row['sqlite']['p50_ms']:6.2f} ms "
              f"p95 {row['sqlite']['p95_ms']:6.2f} ms · loaded in {load_s:.1f} s · a stranger's nearest found "
              f"{row['postgres']['recall_at_1']:.3f} · mated probes' own face found: HNSW "
              f"{row['postgres']['mated_found']:.3f}, matrix {row['sqlite']['mated_found']:.3f}", flush=True)
    return rows


async def timed(collection: Any, queries: list[FaceQuery]) -> dict[str, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        await collection.search(q, 0.3)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(percentile(times, 95), 2)}


async def warm_up(devices: list[SimulatedDevice], crops: list[bytes], timeout: float) -> None:
    """One request a worker first (the broker deals them round robin), so each has loaded its models before
    the clock starts."""
    for crop in crops:
        devices[0].send(FaceQuery(new_face_id(), devices[0].thing, "door", "warm-up", crop, None, time.time()))
    await all_answered(devices, timeout)
    devices[0].sent_at.clear()
    devices[0].answers.clear()
    devices[0].latency_s.clear()


async def stream(server: LocalPostgres, folder: Path, workers: int, kill_one: bool, persons: int,
                 faces: list[tuple[bytes, np.ndarray]], spare: list[bytes], timeout: float) -> dict[str, Any]:
    dsn = fresh_database(server)
    await migrate(dsn)
    preload_postgres(dsn, random_units(persons, seed=1))
    run = folder / f"run-{workers}-{int(kill_one)}"
    with Mosquitto(run / "mosquitto") as broker:
        pool = [Worker(run / f"worker-{i}", f"resolver-{i}", broker, dsn) for i in range(workers)]
        try:
            for w in pool:
                w.start()
            async with SimulatedDevice("door-1", broker.host, broker.port, run / "door-1", 10) as door1, \
                    SimulatedDevice("door-2", broker.host, broker.port, run / "door-2", 10) as door2:
                await warm_up([door1, door2], spare[:workers], timeout)
                pairs = []
                started = time.monotonic()
                for crop, _ in faces:
                    a = FaceQuery(new_face_id(), "door-1", "door", "t", crop, None, time.time())
                    b = FaceQuery(new_face_id(), "door-2", "door", "t", crop, None, time.time())
                    door1.send(a)
                    door2.send(b)
                    pairs.append((a.face_id, b.face_id))
                killed = False
                if kill_one:
                    while len(door1.answers) + len(door2.answers) < len(pairs) * 2 // 3:
                        await asyncio.sleep(0.02)
                    pool[0].kill()
                    killed = True
                await all_answered([door1, door2], timeout)
                elapsed = time.monotonic() - started
                answers = {**door1.answers, **door2.answers}
                latencies = [*door1.latency_s.values(), *door2.latency_s.values()]
                lost = len(door1.unanswered) + len(door2.unanswered)
                resent = door1.uplink.stats.resent + door2.uplink.stats.resent
        finally:
            for w in pool:
                if w.proc is not None and w.proc.poll() is None:
                    w.kill()
    duplicates = sum(1 for a, b in pairs if a in answers and b in answers
                     and answers[a]["person_id"] != answers[b]["person_id"])
    with psycopg.connect(dsn) as conn:
        in_collection = conn.execute("SELECT count(DISTINCT person_id) FROM collection").fetchone()[0]
        faces_recorded = conn.execute("SELECT count(*) FROM faces").fetchone()[0]
    requests = 2 * len(pairs)
    return {"workers": workers, "killed": killed, "requests": requests, "lost": lost,
            "duplicate_persons": duplicates, "throughput_rps": round((requests - lost) / elapsed, 2),
            "p95_ms": round(percentile([s * 1000 for s in latencies], 95), 1),
            "p50_ms": round(percentile([s * 1000 for s in latencies], 50), 1), "resent": resent,
            "persons_in_collection": in_collection, "synthetic_persons": persons, "faces_recorded": faces_recorded}


def table(runs: list[dict[str, Any]]) -> str:
    head = f"{'workers':>7} {'killed':>6} {'requests':>8} {'lost':>4} {'dup':>3} {'rps':>6} {'p50 ms':>7} " \
           f"{'p95 ms':>7} {'resent':>6} {'persons':>8}"
    lines = [head] + [f"{r['workers']:>7} {str(r['killed']):>6} {r['requests']:>8} {r['lost']:>4} "
                      f"{r['duplicate_persons']:>3} {r['throughput_rps']:>6} {r['p50_ms']:>7} {r['p95_ms']:>7} "
                      f"{r['resent']:>6} {r['persons_in_collection']:>8}" for r in runs]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="2", help="worker counts to run one after another, e.g. 1,2 (0: none)")
    parser.add_argument("--kill-one", action="store_true", help="SIGKILL the first worker a third of the way in")
    parser.add_argument("--persons", type=int, default=1000, help="synthetic persons in the collection first")
    parser.add_argument("--faces", type=int, default=40, help="LFW people, each sent by two doors at once")
    parser.add_argument("--search-sizes", default="", help="collection sizes to time the search alone at")
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--ef-search", type=int, default=None, help="[resolver] hnsw_ef_search for --search-sizes "
                        "(default: the config's)")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "lfw-dev" / "images")
    args = parser.parse_args()
    workers = [int(n) for n in args.workers.split(",") if int(n) > 0]
    faces = lfw_faces(args.images, max(args.faces + max(workers, default=0), args.probes))
    spare = [crop for crop, _ in faces[args.faces:]]  # warm-up crops, never among the timed ones
    folder = Path(tempfile.mkdtemp(prefix="onprem-scale-"))
    folder.chmod(0o755)
    result: dict[str, Any] = {}
    try:
        with LocalPostgres(folder / "postgres") as server:
            runs = [await stream(server, folder, n, args.kill_one, args.persons, faces[:args.faces], spare, args.timeout)
                    for n in workers]
            if runs:
                print(table(runs), flush=True)
                result.update(runs[-1])  # the last run's figures at the top, every run under "runs"
                result["runs"] = runs
            if len(runs) > 1:
                result["speedup"] = round(runs[-1]["throughput_rps"] / runs[0]["throughput_rps"], 2)
            if args.search_sizes:
                result["search"] = await search_times(server, faces, [int(s) for s in args.search_sizes.split(",")],
                                                      args.probes, lfw_mates(args.images, args.probes), args.ef_search)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    asyncio.run(main())
