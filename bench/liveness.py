#!/usr/bin/env python3
"""Liveness at the door: APCER and BPCER (ISO/IEC 30107-3) per attack type and per frame, and at the door.

The corpus:
- bona fide: the sample clip (samples/short_hamilton_clip.mp4, live people) and the live sample picture;
- real attacks: the two attack pictures of ../shared/data/spoof-samples (the only real ones obtainable);
- rendered attacks (bench/attacks.py): LFW people, each enrolled from one photo and attacked with another,
  as a hand-held print and as a photo on a phone or tablet; the sample clip's longest shot replayed on a
  tablet (no scene cut: the harder replay). Sizes, distances, light, blur and sway vary by sequence.

Frame level: every face the detector finds is scored by the liveness models (facewatchd/vision/liveness.py).
APCER: attack frames judged live (score at or above live_threshold); BPCER: bona fide frames not judged
live. Per sequence: the largest nose parallax seen (facewatchd/vision/parallax.py), against min_parallax.

Door level: the real daemon with the door plugin (an HTTP relay on loopback), every enrolled name
allowlisted, the attack sequences as cameras: sequences that open the door with liveness on, and with it
off (today's door: this says the attacks were good enough to be named and would have opened it). The live
clip with its main speaker named and allowlisted: grants and the frame of the first grant, on and off.

    .venv/bin/python bench/liveness.py --lfw ../shared/data/lfw-dev/images --spoof ../shared/data/spoof-samples

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.liveness_corpus import Sequence, rendered_corpus, replay_corpus  # noqa: E402
from facewatchd.app.config import parse_config  # noqa: E402
from facewatchd.app.device import Daemon  # noqa: E402
from facewatchd.events import FaceEvent, TrackEnded  # noqa: E402
from facewatchd.hookspecs import hookimpl  # noqa: E402
from facewatchd.logs import configure_logging  # noqa: E402
from facewatchd.plugins import PluginHost  # noqa: E402
from facewatchd.vision.border import framed  # noqa: E402
from facewatchd.vision.detector import YuNetDetector  # noqa: E402
from facewatchd.vision.liveness import LivenessModel  # noqa: E402
from facewatchd.vision.parallax import nose_parallax  # noqa: E402
from plugins.door.liveness import DoorLivenessConfig  # noqa: E402
from facewatchd.pipeline.liveness import PARALLAX_SPANS  # noqa: E402

SPEAKER = "Lin-Manuel Miranda"
CAMERAS_PER_RUN = 8


@dataclass
class FrameStats:
    frames: int = 0
    judged_live: int = 0
    scores: list[float] = field(default_factory=list)
    parallax: list[float] = field(default_factory=list)  # per sequence: the largest seen
    framed: list[int] = field(default_factory=list)  # per sequence: frames with edges all round the face


class Relay:
    """The door's HTTP lock on loopback: counts unlocks."""

    def __init__(self) -> None:
        self.unlocks = 0
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                if self.path == "/unlock":
                    relay.unlocks += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


class Tracks:
    """Ended tracks, and each track's person (a track that ends before its answer learns it from the late
    event that follows)."""

    def __init__(self) -> None:
        self.ended: list[TrackEnded] = []
        self.persons: dict[str, str] = {}

    @hookimpl
    def track_ended(self, event: TrackEnded) -> None:
        self.ended.append(event)

    @hookimpl
    def face_recognised(self, event: FaceEvent) -> None:
        if event.person_id:
            self.persons.setdefault(event.track_id, event.person_id)

    @hookimpl
    def unknown_face(self, event: FaceEvent) -> None:
        self.face_recognised(event)

    def person(self, ended: TrackEnded) -> str | None:
        return ended.face.person_id or self.persons.get(ended.face.track_id)


def config_for(state: Path, sources: list[Path], door: dict[str, Any] | None) -> Any:
    data: dict[str, Any] = {
        "device": {"state_dir": str(state), "drain_timeout_s": 15},
        "logging": {"format": "json", "level": "error"},
        "cameras": [{"id": f"cam{i}", "source": str(s)} for i, s in enumerate(sources)],
    }
    if door is not None:
        data["plugins"] = {"door": door}
    return parse_config(data)


def run(config: Any, *extra: Any) -> Any:
    host = PluginHost(config)
    host.load()
    for i, plugin in enumerate(extra):
        host.pm.register(plugin, name=f"bench{i}")
    return asyncio.run(Daemon(config, host).run())


def door_section(relay: Relay, allow: list[str], audit: Path, liveness: bool) -> dict[str, Any]:
    return {"backend": {"type": "http", "unlock_url": relay.url("/unlock"), "lock_url": relay.url("/lock")},
            "allow": allow, "cooldown_s": 0, "unlock_s": 1, "audit_log": str(audit),
            "liveness": {"enabled": liveness}}


def audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- frame level ----------------------------------------------------------------------------------------
def frame_level(sequences: list[Sequence], live_threshold: float, detector: YuNetDetector,
                model: LivenessModel) -> tuple[dict[str, FrameStats], float]:
    stats: dict[str, FrameStats] = {}
    cpu = 0.0
    checked = 0
    for seq in sequences:
        s = stats.setdefault(seq.kind, FrameStats())
        capture = cv2.VideoCapture(str(seq.path))
        landmarks: list[np.ndarray] = []
        depth, edged = 0.0, 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces = detector.detect(frame)
            if not faces:
                continue
            started = time.process_time()
            scores = [model.score(frame, f.box) for f in faces]
            edged += sum(framed(frame, f.box) for f in faces)
            cpu += time.process_time() - started
            checked += len(faces)
            for score in scores:
                s.frames += 1
                s.judged_live += score >= live_threshold
                s.scores.append(score)
            landmarks.append(max(faces, key=lambda f: f.box[2]).landmarks)
            for span in PARALLAX_SPANS:  # as the daemon measures it: the largest over a few spans
                if len(landmarks) > span:
                    depth = max(depth, nose_parallax(landmarks[-1 - span], landmarks[-1]))
        s.parallax.append(depth)
        s.framed.append(edged)
    return stats, 1000 * cpu / max(checked, 1)


def picture_verdicts(spoof: Path, detector: YuNetDetector, model: LivenessModel) -> dict[str, float]:
    verdicts = {}
    for path in sorted(spoof.glob("*.jpg")):
        image = cv2.imread(str(path))
        faces = detector.detect(image)
        verdicts[path.name] = round(model.score(image, max(faces, key=lambda f: f.box[2]).box), 3) if faces else -1
    return verdicts


# -- door level -----------------------------------------------------------------------------------------
def door_level(sequences: list[Sequence], state: Path, allow: list[str], liveness: bool,
               work: Path) -> tuple[int, dict[str, int], dict[str, list[str]]]:
    relay = Relay()
    opened: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}
    for start in range(0, len(sequences), CAMERAS_PER_RUN):
        group = sequences[start:start + CAMERAS_PER_RUN]
        log = work / f"audit-{liveness}-{start}.jsonl"
        run(config_for(state, [s.path for s in group], door_section(relay, allow, log, liveness)))
        records = audit(log)
        for i, seq in enumerate(group):
            mine = [r for r in records if r.get("camera") == f"cam{i}"]
            if any(r["decision"] == "grant" for r in mine):
                opened[seq.kind] = opened.get(seq.kind, 0) + 1
                if liveness:
                    grant = next(r for r in mine if r["decision"] == "grant")
                    print(f"OPENED with liveness on: {seq.name}: {grant}", file=sys.stderr)
            reasons[seq.name] = sorted({r["reason"] for r in mine})
    return relay.unlocks, opened, reasons


def live_clip_at_door(clip: Path, state: Path, work: Path) -> dict[str, Any]:
    """The clip with its main speaker named (as a user would: the longest track's person, and the same man
    far away at the start merged into him) and allowlisted, liveness on and off."""
    import facewatchd.cli as cli

    tracks = Tracks()
    run(config_for(state, [clip], None), tracks)
    longest = tracks.person(max(tracks.ended, key=lambda t: t.frames))
    opening = tracks.person(min(tracks.ended, key=lambda t: t.face.ts - t.dwell_s))
    config_file = work / "clip.toml"
    config_file.write_text(f'[device]\nstate_dir = "{state}"\n[logging]\nlevel = "error"\n')
    assert longest is not None
    cli.main(["faces", "label", longest, SPEAKER, "--config", str(config_file)])
    if opening and opening != longest:
        cli.main(["faces", "merge", longest, opening, "--config", str(config_file)])
    fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS) or 30.0
    result: dict[str, Any] = {}
    for liveness in (False, True):
        relay = Relay()
        log = work / f"clip-audit-{liveness}.jsonl"
        started = resource.getrusage(resource.RUSAGE_SELF)
        run(config_for(state, [clip], door_section(relay, [SPEAKER], log, liveness) | {"cooldown_s": 3}))
        ended = resource.getrusage(resource.RUSAGE_SELF)
        grants = [r for r in audit(log) if r["decision"] == "grant"]
        result["on" if liveness else "off"] = {
            "grants": len(grants), "first_grant_frame": round(grants[0]["camera_ts"] * fps) if grants else None,
            "grant_frames": [round(g["camera_ts"] * fps) for g in grants],
            "denials": sorted({r["reason"] for r in audit(log) if r["decision"] == "deny"}),
            "cpu_s": round(ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime, 2)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW images folder (../shared/data/lfw-dev/images)")
    parser.add_argument("--spoof", type=Path, required=True, help="../shared/data/spoof-samples")
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "short_hamilton_clip.mp4")
    parser.add_argument("--people", type=int, default=22, help="LFW people: a print and a screen each")
    parser.add_argument("--frames", type=int, default=40, help="frames per rendered sequence (10 fps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-door", action="store_true", help="frame level only (no daemon runs)")
    args = parser.parse_args()

    configure_logging("console", "error")
    policy = DoorLivenessConfig()
    detector, model = YuNetDetector(), LivenessModel()
    with tempfile.TemporaryDirectory(prefix="liveness-bench-") as tmp:
        work = Path(tmp)
        attacks, enrol = rendered_corpus(args.lfw, args.people, args.frames, work, detector, args.seed)
        attacks += replay_corpus(args.clip, args.frames, work, detector, args.seed)
        live = [Sequence("sample clip", "bona fide", args.clip)]
        stats, ms_per_face = frame_level(attacks + live, policy.live_threshold, detector, model)
        pictures = picture_verdicts(args.spoof, detector, model)

        print(f"frame level, live at {policy.live_threshold} (models alone); parallax: median over sequences of "
              f"the largest seen; framed: sequences with {policy.framed_frames}+ framed faces")
        print(f"{'type':<14} {'seqs':>5} {'frames':>7} {'judged live':>12} {'APCER/BPCER':>12} "
              f"{'median':>7} {'parallax':>14} {'framed':>7} {'framed frames':>14}")
        table: dict[str, Any] = {}
        for kind, s in stats.items():
            rate = s.judged_live / max(s.frames, 1) if kind != "bona fide" else 1 - s.judged_live / max(s.frames, 1)
            # (the clip's shots cut between people: a largest-face parallax across a cut means nothing)
            deep = float(np.median(s.parallax)) if s.parallax and kind != "bona fide" else float("nan")
            edged = sum(n >= policy.framed_frames for n in s.framed)
            table[kind] = {"sequences": len(s.parallax), "frames": s.frames, "judged_live": s.judged_live,
                           ("bpcer" if kind == "bona fide" else "apcer"): round(rate, 4),
                           "median_score": round(float(np.median(s.scores)), 3) if s.scores else None,
                           "median_largest_parallax": None if np.isnan(deep) else round(deep, 3), "sequences_framed": edged,
                           "framed_frames": sum(s.framed)}
            print(f"{kind:<14} {len(s.parallax):>5} {s.frames:>7} {s.judged_live:>12} {rate:>12.3f} "
                  f"{table[kind]['median_score']!s:>7} {deep:>14.3f} {edged:>7} {sum(s.framed):>14}")
        print(f"spoof-samples: {pictures} (T1 live, F1 and F2 attacks)")
        print(f"liveness CPU per checked face (models + edges): {ms_per_face:.2f} ms")
        result: dict[str, Any] = {"frame": table, "pictures": pictures, "ms_per_face": round(ms_per_face, 2),
                                  "live_threshold": policy.live_threshold, "min_parallax": policy.min_parallax}
        if not args.no_door:
            state = work / "state"
            config_file = work / "enrol.toml"
            config_file.write_text(f'[device]\nstate_dir = "{state}"\n[logging]\nlevel = "error"\n')
            import facewatchd.cli as cli

            for name, photo in enrol.items():
                cli.main(["faces", "enroll", name, str(photo), "--config", str(config_file)])
            clip = live_clip_at_door(args.clip, state, work)
            door: dict[str, Any] = {}
            for liveness in (False, True):
                unlocks, opened, reasons = door_level(attacks, state, list(enrol) + [SPEAKER], liveness, work)
                door["on" if liveness else "off"] = {"unlocks": unlocks, "opened_by_type": opened,
                                                     "opened": sum(opened.values())}
                if liveness:
                    door["reasons"] = reasons
            print(f"\ndoor level, {len(attacks)} attack sequences (every enrolled name allowlisted)")
            print(f"{'liveness':<9} {'sequences that opened it':>25}  by type")
            for key in ("off", "on"):
                print(f"{key:<9} {door[key]['opened']:>25}  {door[key]['opened_by_type']}")
            print(f"live clip, {SPEAKER} allowlisted: off {clip['off']['grants']} grant(s) first at frame "
                  f"{clip['off']['first_grant_frame']}; on {clip['on']['grants']} grant(s) first at frame "
                  f"{clip['on']['first_grant_frame']} (CPU {clip['off']['cpu_s']} → {clip['on']['cpu_s']} s)")
            counted: dict[str, int] = {}
            for found in door["reasons"].values():
                for reason in found:
                    counted[reason] = counted.get(reason, 0) + 1
            print(f"attack denial reasons (sequences): {counted}")
            result["door"] = {k: v for k, v in door.items() if k != "reasons"} | {"denial_reasons": counted}
            result["live_clip"] = clip
            result["attack_sequences"] = len(attacks)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
