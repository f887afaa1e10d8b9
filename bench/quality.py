#!/usr/bin/env python3
"""The face quality gate (facewatchd/vision/quality.py), calibrated: do the faces it rejects fail to match
their own person far more often than the faces it passes?

LFW's genuine pairs (pairs-dev.txt): the first photo, clean, is the enrolled face; the second is the probe,
as it is and in degraded copies a camera makes (darkened, underexposed, low contrast, blurred, downscaled so
the face is 30, 20 or 14 px). Each probe goes through the device's own detector (YuNet, default config but
no minimum size, so the gate decides on size) and SFace (flip-averaged), and is measured by the gate.

A probe *fails to match* when its cosine to its own enrolled face is below the threshold at a fixed false
match rate: 0.366, SFace's impostor tail at FMR 1e-3 (identity.impostor_threshold, measured on 14.4 M LFW
impostor pairs), and the naming floor 0.50. Tables: per degradation; gate passed against rejected (the
target: rejected fail at least 5x as often); per failure reason; per quality bin of each measure, the
embedding's norm (SFace's unnormalised feature: the MagFace idea) included. Then one JSON line.

    .venv/bin/python bench/quality.py --lfw ../shared/data/lfw-dev [--pairs 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facewatchd.identity import IdentityConfig, impostor_threshold
from facewatchd.vision.detector import DetectorConfig, Face, YuNetDetector
from facewatchd.vision.embedder import SFaceEmbedder
from facewatchd.vision.quality import FaceQuality, QualityConfig, measure

FMR_THRESHOLD = impostor_threshold(1e-3)
NAME_THRESHOLD = IdentityConfig().name_threshold


def _scaled(face_px: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda img: cv2.resize(img, None, fx=face_px / 110, fy=face_px / 110, interpolation=cv2.INTER_AREA)


def _gamma(img: np.ndarray, gamma: float, gain: float) -> np.ndarray:
    return np.clip(255 * gain * (img / 255.0) ** gamma, 0, 255).astype(np.uint8)


def _contrast(img: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(img.mean() + factor * (img.astype(np.float32) - img.mean()), 0, 255).astype(np.uint8)


# a degraded copy of an LFW photo (250 px, the face ~110 px), as cameras make them
DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clean": lambda img: img,
    "dark": lambda img: _gamma(img, 1.8, 0.45),
    "very dark": lambda img: _gamma(img, 2.4, 0.22),
    "low contrast": lambda img: _contrast(img, 0.25),
    "blur 2": lambda img: cv2.GaussianBlur(img, (0, 0), 2.0),
    "blur 4": lambda img: cv2.GaussianBlur(img, (0, 0), 4.0),
    "30 px": _scaled(30),
    "20 px": _scaled(20),
    "14 px": _scaled(14),
}


@dataclass
class Probe:
    degradation: str
    quality: FaceQuality | None  # None: no face found
    norm: float
    similarity: float


def genuine_pairs(lfw: Path, limit: int) -> list[tuple[Path, Path]]:
    pairs = []
    for line in (lfw / "pairs-dev.txt").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3:
            name, i, j = parts[0], int(parts[1]), int(parts[2])
            folder = lfw / "images" / name
            pairs.append((folder / f"{name}_{i:04d}.jpg", folder / f"{name}_{j:04d}.jpg"))
    return pairs[:limit]


class Faces:
    def __init__(self) -> None:
        self.detector = YuNetDetector(DetectorConfig(min_face_px=8))
        self.embedder = SFaceEmbedder()

    def central(self, image: np.ndarray) -> Face | None:
        """The face nearest the image centre (LFW photos are centred on their person)."""
        faces = self.detector.detect(image)
        h, w = image.shape[:2]
        return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - w / 2) ** 2 + (f.box[1] + f.box[3] / 2 - h / 2) ** 2,
                   default=None)

    def embed(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray, float]:
        """(aligned, flip-averaged unit embedding, mean norm of the unnormalised plain and mirrored features)."""
        aligned = self.embedder.align(image, face)
        embeddings, norms = self.embedder.embed_batch_with_norms([aligned])
        return aligned, embeddings[0], float(norms[0])


def run(lfw: Path, limit: int) -> list[Probe]:
    faces = Faces()
    probes: list[Probe] = []
    for n, (enrolled_path, probe_path) in enumerate(genuine_pairs(lfw, limit)):
        enrolled_image, probe_image = cv2.imread(str(enrolled_path)), cv2.imread(str(probe_path))
        face = faces.central(enrolled_image) if enrolled_image is not None else None
        if face is None or probe_image is None:
            continue
        _, enrolled, _ = faces.embed(enrolled_image, face)
        for name, degrade in DEGRADATIONS.items():
            image = degrade(probe_image)
            found = faces.central(image)
            if found is None:
                probes.append(Probe(name, None, 0.0, -1.0))
                continue
            aligned, embedding, norm = faces.embed(image, found)
            probes.append(Probe(name, measure(found, aligned, norm), norm, float(embedding @ enrolled)))
        if (n + 1) % 100 == 0:
            print(f"  {n + 1} pairs", file=sys.stderr, flush=True)
    return probes


def fnmr(probes: list[Probe], threshold: float) -> float:
    return sum(p.similarity < threshold for p in probes) / len(probes) if probes else float("nan")


def row(label: str, probes: list[Probe], width: int = 28) -> str:
    return (f"{label:<{width}} {len(probes):>6} {fnmr(probes, FMR_THRESHOLD):>10.3f} "
            f"{fnmr(probes, NAME_THRESHOLD):>10.3f}")


def header(first: str, width: int = 28) -> str:
    return f"{first:<{width}} {'faces':>6} {'FNMR@1e-3':>10} {'FNMR@0.50':>10}"


def report(probes: list[Probe], gate: QualityConfig) -> dict[str, float]:
    found = [p for p in probes if p.quality is not None]
    print(header("degradation") + f" {'not found':>10} {'passed':>7}")
    for name in DEGRADATIONS:
        mine = [p for p in probes if p.degradation == name]
        seen = [p for p in mine if p.quality is not None]
        passed = sum(gate.passes(p.quality) for p in seen if p.quality)
        print(row(name, seen) + f" {len(mine) - len(seen):>10} {passed / max(1, len(seen)):>7.2f}")

    passed = [p for p in found if p.quality and gate.passes(p.quality)]
    rejected = [p for p in found if p.quality and not gate.passes(p.quality)]
    print("\n" + header("the gate"))
    print(row("passed", passed))
    print(row("rejected", rejected))
    ratio = fnmr(rejected, FMR_THRESHOLD) / max(fnmr(passed, FMR_THRESHOLD), 1e-9)
    ratio_name = fnmr(rejected, NAME_THRESHOLD) / max(fnmr(passed, NAME_THRESHOLD), 1e-9)
    print(f"{'rejected / passed':<28} {'':>6} {ratio:>9.1f}x {ratio_name:>9.1f}x")

    print("\n" + header("failed because (alone or not)"))
    reasons = sorted({why for p in found if p.quality for why in gate.failures(p.quality)})
    for why in reasons:
        print(row(why, [p for p in found if p.quality and why in gate.failures(p.quality)]))

    measures: dict[str, Callable[[Probe], float]] = {
        "side": lambda p: p.quality.side, "sharpness": lambda p: p.quality.sharpness,  # type: ignore[union-attr]
        "brightness": lambda p: p.quality.brightness, "contrast": lambda p: p.quality.contrast,  # type: ignore[union-attr]
        "yaw": lambda p: p.quality.yaw, "score": lambda p: p.quality.score,  # type: ignore[union-attr]
        "embedding norm": lambda p: p.norm}  # type: ignore[union-attr]
    print("\nper quality bin (quintiles of each measure over every found face; FNMR at FMR 1e-3)")
    print(f"{'measure':<16} " + " ".join(f"{'q' + str(i + 1) + ' (' + 'edge' + ')':>20}" for i in range(5)))
    low_high: dict[str, float] = {}
    for name, value in measures.items():
        values = np.array([value(p) for p in found])
        edges = np.quantile(values, [0.2, 0.4, 0.6, 0.8])
        bins = np.digitize(values, edges)
        cells = []
        for b in range(5):
            members = [p for p, k in zip(found, bins) if k == b]
            upper = f"<{edges[b]:.3g}" if b < 4 else f">={edges[3]:.3g}"
            cells.append(f"{fnmr(members, FMR_THRESHOLD):.3f} ({upper})")
        print(f"{name:<16} " + " ".join(f"{c:>20}" for c in cells))
        low_high[name] = round(fnmr([p for p, k in zip(found, bins) if k == 0], FMR_THRESHOLD)
                               / max(fnmr([p for p, k in zip(found, bins) if k == 4], FMR_THRESHOLD), 1e-9), 2)
    return {"faces": len(found), "passed": len(passed), "rejected": len(rejected),
            "fnmr_passed": round(fnmr(passed, FMR_THRESHOLD), 4), "fnmr_rejected": round(fnmr(rejected, FMR_THRESHOLD), 4),
            "ratio": round(ratio, 2), "ratio_at_name_threshold": round(ratio_name, 2),
            "lowest_over_highest_quintile": low_high}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="the LFW folder: pairs-dev.txt and images/")
    parser.add_argument("--pairs", type=int, default=600, help="genuine pairs to use (of 1,500)")
    parser.add_argument("--probes", type=Path, help="keep the measured probes in this JSON file and reuse them "
                        "(to try other gate settings without measuring again)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    started = time.process_time()
    if args.probes and args.probes.exists():
        probes = [Probe(d["degradation"], FaceQuality(**d["quality"]) if d["quality"] else None, d["norm"],
                        d["similarity"]) for d in json.loads(args.probes.read_text())]
    else:
        probes = run(args.lfw, args.pairs)
        if args.probes:
            args.probes.write_text(json.dumps([{"degradation": p.degradation, "norm": p.norm, "similarity": p.similarity,
                                                "quality": p.quality.as_dict() if p.quality else None} for p in probes]))
    result = report(probes, QualityConfig())
    result |= {"pairs": args.pairs, "fmr_threshold": round(FMR_THRESHOLD, 3), "cpu_s": round(time.process_time() - started, 1)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
