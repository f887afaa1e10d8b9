#!/usr/bin/env python3
"""Resolver calls and identity errors of four recognition policies on one synthetic camera stream.

The stream (deterministic for a seed): people, one folder of photos each, walk into a 960x540 scene at
10 fps, stay 3-6 s while their face moves, grows or shrinks, tilts and changes brightness, showing
their photos in turn (about a second each, a new pose; every visit starts on other photos), with
camera noise; then they leave, some come back later, and at times two or three are in frame at once.
Where each face was drawn is known, so every detection has its true identity.
The stream is in bench/visits_stream.py, the policies in bench/visits_policies.py.

Every frame is detected and every face aligned and embedded once (YuNet + SFace, as the daemon is
configured); the same detections and embeddings feed every policy, so only the policy differs:

  facewatchd     the real Tracker, Recognizer, FaceCache, Uplink and outbox, talking through the local
                 link to the embedded resolver, labels coming back through the shadow
  per-frame      every detected face sent to the resolver
  seed-workshop  the seed's cache: the 6 most recently inserted embeddings, FIFO; a match within the
                 threshold counts as known; a match whose person has no name is sent again once 60 s
                 of stream time have passed since it was last sent
  per-track      each new track sent once (its first frame), no memory across tracks

Each policy has its own local resolver (the same resolver core and SQLite stores on its own state dir).
When a person's first visit is over, the operator names them, as `facewatchd faces label` does: the
person id the policy gave most of that visit's faces gets the person's folder name.

Reported per policy: resolver calls (per visit, per distinct person, on first visits per person, per
return visit); merges (one person id given to two people) and splits (one person given two ids), over
every detected face; faces shown with another person's name after labelling; frames from a person's
first appearance in a visit to an id (first visits) and to their name (visits after they were named).
A table, then one JSON line.

    .venv/bin/python bench/visits.py --faces ../shared/data/lfw-dev/images --min-photos 3 --people 10 --visits 36
"""


import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.visits_policies import (THING, Facewatchd, PerFrame, PerTrack, Policy, SeedWorkshop,  # noqa: E402
                                   Shown)
from bench.visits_stream import (FPS, Detection, Person, Scene, SharedEmbeddings, Visit, load_people,  # noqa: E402
                                 schedule, truth)
from facewatchd.app.config import Config, parse_config  # noqa: E402
from facewatchd.logs import configure_logging  # noqa: E402
from facewatchd.pipeline.camera import Frame  # noqa: E402
from facewatchd.pipeline.motion import shrink  # noqa: E402
from facewatchd.pipeline.tracker import SceneCutDetector, Tracker  # noqa: E402
from facewatchd.vision.detector import YuNetDetector  # noqa: E402
from facewatchd.vision.embedder import create_embedder  # noqa: E402


# -- the run ------------------------------------------------------------------------------------

@dataclass
class Record:
    frame: int
    person: int
    visit: int
    shown: Shown


@dataclass
class Outcome:
    records: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    labelled_at: dict[int, int] = field(default_factory=dict)  # person → frame their name was given
    detections: int = 0
    unmatched_detections: int = 0
    missed_faces: int = 0
    frames: int = 0


async def run_stream(people: list[Person], visits: list[Visit], scene: Scene, detector: YuNetDetector,
                     embedder: SharedEmbeddings, config: Config, state: Path,
                     baselines: bool = True) -> tuple[Outcome, list[Policy]]:
    truth_of_track: dict[str, Detection] = {}
    policies: list[Policy] = [Facewatchd(state / "facewatchd", config, embedder, truth_of_track)]
    if baselines:
        policies += [PerFrame(state / "per-frame", config), SeedWorkshop(state / "seed", config),
                     PerTrack(state / "per-track", config)]
    tracker = Tracker("bench", config.tracker)
    cuts = SceneCutDetector(config.tracker.scene_cut_threshold)
    out = Outcome()
    first_visit_end = {v.person: v.end for v in visits if v.first}
    last = max(v.end for v in visits) + round(2 * FPS)
    async with AsyncExitStack() as stack:
        for p in policies:
            await p.start(stack)
        for index in range(last):
            for person, end in first_visit_end.items():
                if end == index:
                    await name_person(people[person], out, policies, visits)
                    out.labelled_at[person] = index
            image, drawn = scene.render(index)
            faces = detector.detect(image)
            frame = Frame("bench", index, index / FPS, image)
            detections: list[Detection] = []
            for face, (aligned, emb) in zip(faces, embedder.detections(image, faces)):
                d = truth(face, drawn)
                detections.append(Detection(face, aligned, emb, d.visit.person if d else None,
                                            d.visit.index if d else None))
            out.missed_faces += len(drawn) - sum(det.person is not None for det in detections)
            update = tracker.update(faces, index, frame.ts, scene_cut=cuts.is_cut(shrink(image)))
            by_face = {id(t.face): t for t in update.started + update.continued}
            tracks = [by_face[id(f)] for f in faces]
            for det, track in zip(detections, tracks):
                if det.person is not None:
                    truth_of_track.setdefault(track.id, det)
            for p in policies:
                started = time.perf_counter()
                shown = await p.frame(frame, detections, tracks, update)
                p.seconds += time.perf_counter() - started
                for det, s in zip(detections, shown):
                    if det.person is not None and det.visit is not None:
                        out.records[p.name].append(Record(index, det.person, det.visit, s))
            out.detections += len(detections)
            out.unmatched_detections += sum(det.person is None for det in detections)
            out.frames += 1
        remaining = tracker.end_all()
        for p in policies:
            await p.end(remaining)
    return out, policies


async def name_person(person: Person, out: Outcome, policies: list[Policy], visits: list[Visit]) -> None:
    """The operator names a person after their first visit: the id each policy showed most gets the name."""
    first = next(v.index for v in visits if v.person == person.index and v.first)
    for p in policies:
        ids = Counter(r.shown[0] for r in out.records[p.name] if r.visit == first and r.shown[0])
        if ids:
            await p.label(ids.most_common(1)[0][0], person.name)


# -- the numbers --------------------------------------------------------------------------------

def frames_until(records: list[Record], ok: Any) -> int | None:
    """Frames from the visit's first detected face to the first frame where `ok` holds (None: never)."""
    if not records:
        return None
    start = records[0].frame
    return next((r.frame - start for r in records if ok(r)), None)


def summarise(policy: Policy, records: list[Record], people: list[Person], visits: list[Visit],
              labelled_at: dict[int, int]) -> dict[str, Any]:
    persons_of_id: dict[str, set[int]] = defaultdict(set)
    ids_of_person: dict[int, set[str]] = defaultdict(set)
    by_visit: dict[int, list[Record]] = defaultdict(list)
    wrong = 0
    wrong_pairs: Counter[tuple[str, str]] = Counter()
    for r in records:
        by_visit[r.visit].append(r)
        pid, name = r.shown
        if pid:
            persons_of_id[pid].add(r.person)
            ids_of_person[r.person].add(pid)
        if name is not None and name != people[r.person].name:
            wrong += 1
            wrong_pairs[(people[r.person].name, name)] += 1
    first_calls = sum(1 for c in policy.calls if c.visit is not None and visits[c.visit].first)
    return_calls = sum(1 for c in policy.calls if c.visit is not None and not visits[c.visit].first)
    returns = [v for v in visits if not v.first]
    to_id = [frames_until(by_visit[v.index], lambda r: r.shown[0] is not None) for v in visits if v.first]
    named_returns = [v for v in returns if v.start >= labelled_at.get(v.person, 1 << 30)]
    to_name = [frames_until(by_visit[v.index], lambda r: r.shown[1] == people[r.person].name) for v in named_returns]
    merges = sum(len(s) - 1 for s in persons_of_id.values())
    splits = sum(len(s) - 1 for s in ids_of_person.values())
    calls = len(policy.calls)
    result: dict[str, Any] = {
        "resolver_calls": calls,
        "calls_per_visit": round(calls / len(visits), 3),
        "calls_per_person": round(calls / len(people), 3),
        "calls_per_new_person": round(first_calls / len(people), 3),
        "calls_per_return_visit": round(return_calls / len(returns), 3) if returns else None,
        "calls_unattributed": calls - first_calls - return_calls,
        "merges": merges, "splits": splits, "identity_errors": merges + splits,
        "wrong_name_faces": wrong,
        "frames_to_id_new_median": median(to_id), "never_identified_visits": sum(x is None for x in to_id),
        "frames_to_name_known_median": median(to_name), "known_visits": len(named_returns),
        "known_visits_never_named": sum(x is None for x in to_name),
        "seconds": round(policy.seconds, 1),
        # who was merged with whom, and who was shown with whose name (faces): to look at the photos
        "merged_people": sorted(sorted(people[i].name for i in s) for s in persons_of_id.values() if len(s) > 1),
        "wrong_names": [{"person": a, "shown_as": b, "faces": n} for (a, b), n in wrong_pairs.most_common()],
    }
    if isinstance(policy, Facewatchd):
        stats = policy.recognizer.stats
        result.update(resolver_requests=policy.requests, embeds=stats.embeds, cache_hits=stats.cache_hits,
                      joined_pending=stats.joined_pending, tracks=stats.tracks)
    return result


def median(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None


def targets(policies: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    if "seed-workshop" not in policies:
        return {}
    fw, seed, per_track = policies["facewatchd"], policies["seed-workshop"], policies["per-track"]
    return {
        "facewatchd_calls_per_new_person<=1": fw["calls_per_new_person"] <= 1.0,
        "facewatchd_calls_per_return_visit==0": None if fw["calls_per_return_visit"] is None
        else fw["calls_per_return_visit"] == 0,
        "seed_calls>=10x_facewatchd": seed["resolver_calls"] >= 10 * fw["resolver_calls"],
        "facewatchd_identity_errors<=per_track": fw["identity_errors"] <= per_track["identity_errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="one subfolder of photos per person")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--visits", type=int, default=30, help="visits in all, first visits included")
    parser.add_argument("--min-photos", type=int, default=1, help="use only people with this many photos")
    parser.add_argument("--only-facewatchd", action="store_true", help="skip the three baseline policies")
    parser.add_argument("--no-quality-gate", action="store_true", help="facewatchd without its face quality gate "
                        "([quality] enabled = false), to compare")
    args = parser.parse_args()
    if not args.faces.is_dir():
        parser.error(f"not a folder: {args.faces}")
    cv2.setNumThreads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="visits-") as tmp:
        config = parse_config({"device": {"state_dir": tmp, "thing": THING},
                               "logging": {"format": "json", "level": "error"},
                               "quality": {"enabled": not args.no_quality_gate}})
        configure_logging(config.logging.format, config.logging.level)
        rng = np.random.default_rng(args.seed)
        detector = YuNetDetector(config.detector)
        people = load_people(args.faces, args.people, args.min_photos, rng, detector)
        if len(people) < 2:
            raise SystemExit(f"{args.faces}: need at least 2 people with a detectable face, found {len(people)}")
        visits = schedule(people, args.visits, rng)
        embedder = SharedEmbeddings(create_embedder(config.embedder))
        out, policies = asyncio.run(run_stream(people, visits, Scene(people, visits, rng), detector, embedder, config,
                                               Path(tmp), baselines=not args.only_facewatchd))
        results = {p.name: summarise(p, out.records[p.name], people, visits, out.labelled_at) for p in policies}
    fw_calls = max(1, results["facewatchd"]["resolver_calls"])
    for r in results.values():
        r["calls_vs_facewatchd"] = round(r["resolver_calls"] / fw_calls, 1)
    report = {
        "stream": {"faces_dir": str(args.faces), "seed": args.seed, "people": len(people), "visits": len(visits),
                   "return_visits": sum(not v.first for v in visits), "frames": out.frames, "fps": FPS,
                   "stream_s": round(out.frames / FPS, 1), "detections": out.detections,
                   "detections_without_truth": out.unmatched_detections, "drawn_faces_missed": out.missed_faces,
                   "max_in_frame": max_concurrent(visits), "embeddings_computed_again": embedder.computed_again,
                   "reverify_embeddings": embedder.plain},
        "policies": results,
        "targets": targets(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print(json.dumps(report))


def max_concurrent(visits: list[Visit]) -> int:
    edges = sorted([(v.start, 1) for v in visits] + [(v.end, -1) for v in visits], key=lambda e: (e[0], e[1]))
    here = most = 0
    for _, step in edges:
        here += step
        most = max(most, here)
    return most


def print_table(r: dict[str, Any]) -> None:
    s = r["stream"]
    print(f"{s['people']} people, {s['visits']} visits ({s['return_visits']} returns), {s['frames']} frames "
          f"({s['stream_s']} s), up to {s['max_in_frame']} in frame; {s['detections']} faces detected, "
          f"{s['drawn_faces_missed']} drawn faces missed, {s['detections_without_truth']} detections of nobody")
    cols = [("calls", "resolver_calls"), ("x fw", "calls_vs_facewatchd"), ("/visit", "calls_per_visit"),
            ("/person", "calls_per_person"), ("/new", "calls_per_new_person"), ("/return", "calls_per_return_visit"),
            ("merges", "merges"), ("splits", "splits"), ("wrong names", "wrong_name_faces"),
            ("frames to id", "frames_to_id_new_median"), ("frames to name", "frames_to_name_known_median")]
    print(f"{'policy':<15}" + "".join(f"{c:>{max(8, len(c) + 2)}}" for c, _ in cols))
    for name, m in r["policies"].items():
        cells = []
        for c, key in cols:
            v = m[key]
            text = "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
            cells.append(f"{text:>{max(8, len(c) + 2)}}")
        print(f"{name:<15}" + "".join(cells))
    print("targets: " + ", ".join(f"{k} {'ok' if v else ('n/a' if v is None else 'MISSED')}"
                                  for k, v in r["targets"].items()))
    print(f"{r['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
