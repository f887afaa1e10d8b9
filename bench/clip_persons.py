#!/usr/bin/env python3
"""The persons a first run of the sample clip makes, with the face quality gate and without it: a contact
sheet of each run's crops (every face sent to the resolver, labelled with its track and, for the run
without the gate, why the gate would have kept it back), and one JSON line with the counts.

    .venv/bin/python bench/clip_persons.py [--clip samples/short_hamilton_clip.mp4] [--out docs/quality]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewatchd.vision.quality import FaceQuality, QualityConfig

ROOT = Path(__file__).resolve().parent.parent
TILE = 160


def run(clip: Path, state: Path, gate: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One first run of the daemon on the clip: its summary, and each face query it sent (from its log)."""
    config = state / "facewatchd.toml"
    config.write_text(f'[device]\nstate_dir = "{state}"\n[logging]\nformat = "json"\n'
                      f'[[cameras]]\nid = "sample"\nsource = "{clip}"\n[quality]\nenabled = {str(gate).lower()}\n')
    proc = subprocess.run([sys.executable, "-m", "facewatchd", "run", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    sent = []
    for line in proc.stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "face_query_sent":
            sent.append(record)
    return json.loads(proc.stdout), sent


def sheet(state: Path, sent: list[dict[str, Any]], gate: QualityConfig, path: Path) -> None:
    tiles = []
    for record in sent:
        [crop] = list((state / "resolver").rglob(f"{record['face_id']}.jpg"))
        tile = cv2.resize(cv2.imread(str(crop)), (TILE, TILE), interpolation=cv2.INTER_AREA)
        why = gate.failures(FaceQuality(**record["quality"]))
        cv2.rectangle(tile, (0, 0), (TILE - 1, TILE - 1), (0, 0, 255) if why else (0, 200, 0), 3)
        cv2.putText(tile, f"track {record['track_id'].rsplit('-', 1)[-1]}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(tile, ", ".join(why) if why else "worth naming", (6, TILE - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (80, 80, 255) if why else (80, 255, 80), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 6:
        tiles.append(np.zeros((TILE, TILE, 3), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([np.hstack(tiles[i:i + 6]) for i in range(0, len(tiles), 6)]),
                [cv2.IMWRITE_JPEG_QUALITY, 85])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "samples" / "short_hamilton_clip.mp4")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "quality")
    args = parser.parse_args()
    gate = QualityConfig()
    result: dict[str, Any] = {}
    for name, on in (("without_gate", False), ("with_gate", True)):
        with tempfile.TemporaryDirectory(prefix="clip-") as tmp:
            summary, sent = run(args.clip.resolve(), Path(tmp), on)
            sheet(Path(tmp), sent, gate, args.out / f"clip-persons-{name.replace('_', '-')}.jpg")
        result[name] = {"persons": len(summary["persons"]), "resolver_calls": summary["resolver_calls"],
                        "tracks": summary["tracks"], "tracks_not_worth_naming": summary["tracks_not_worth_naming"],
                        "would_fail_the_gate": sum(bool(gate.failures(FaceQuality(**r["quality"]))) for r in sent)}
        print(f"{name:<14} persons {result[name]['persons']:>3}  resolver calls {result[name]['resolver_calls']:>3}  "
              f"tracks {result[name]['tracks']:>3}  not worth naming {result[name]['tracks_not_worth_naming']:>3}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
