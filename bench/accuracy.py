#!/usr/bin/env python3
"""Face verification accuracy of the device's detector + embedder on an LFW-format pairs file.

Pairs: an optional header `FOLDS<TAB>N` (LFW: "10 300", our dev half: "5 300"), then same-person lines
`name i j` and different-person lines `name1 i name2 j`; i and j are image numbers (DIR/name/name_%04d.jpg)
or file names (DIR/name/FILE), so any identity/image folder works. Every image goes through what the
daemon does: YuNet (largest face), SFace alignment and embedding. A pair whose image has no face is
counted as an error at every threshold (a wrong "different" for a same-person pair, a wrong "same" for
a different-person pair), never dropped.

Reported: accuracy, TAR and FAR at the configured threshold and at the door plugin's unlock threshold;
the k-fold protocol's accuracy (threshold chosen on the other folds; the header's folds, else 10);
TAR at FAR 1e-2 and 1e-3 (threshold set on the different-person pairs). A table, then one JSON line.

    .venv/bin/python bench/accuracy.py --pairs ../shared/data/lfw-dev/pairs-dev.txt \
        --images ../shared/data/lfw-dev/images [--backend torch] [--int8] [--limit 600]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewatchd.identity import IdentityConfig
from facewatchd.logs import configure_logging
from facewatchd.vision.detector import DetectorConfig, YuNetDetector
from facewatchd.vision.embedder import SFACE_COSINE_THRESHOLD, EmbedderConfig, create_embedder

DEFAULT_FOLDS = 10
FALLBACK_UNLOCK_THRESHOLD = 0.45
FARS = (1e-2, 1e-3)
EMBED_CHUNK = 64  # images aligned, then embedded together (one batch for the torch backend)


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int


def door_unlock_threshold() -> float:
    """The door plugin's default unlock threshold, read from its config schema."""
    try:
        from plugins.door import DoorConfig
    except ImportError:
        return FALLBACK_UNLOCK_THRESHOLD
    return float(DoorConfig.model_fields["unlock_threshold"].default)


def image_path(images: Path, name: str, ref: str) -> Path:
    return images / name / (f"{name}_{int(ref):04d}.jpg" if ref.isdigit() else ref)


def read_pairs(pairs_file: Path, images: Path) -> tuple[list[Pair], int]:
    """The pairs with their fold; folds come from the header, else DEFAULT_FOLDS contiguous blocks."""
    lines = [ln.split() for ln in pairs_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    header: tuple[int, int] | None = None
    if lines and len(lines[0]) <= 2 and all(x.isdigit() for x in lines[0]):
        first = lines.pop(0)
        header = (int(first[0]), int(first[1]) if len(first) > 1 else 0)
    rows: list[tuple[Path, Path, bool]] = []
    for n, parts in enumerate(lines, start=2 if header else 1):
        if len(parts) == 3:
            rows.append((image_path(images, parts[0], parts[1]), image_path(images, parts[0], parts[2]), True))
        elif len(parts) == 4:
            rows.append((image_path(images, parts[0], parts[1]), image_path(images, parts[2], parts[3]), False))
        else:
            raise SystemExit(f"{pairs_file}:{n}: expected 'name i j' or 'name1 i name2 j', got {' '.join(parts)!r}")
    if not rows:
        raise SystemExit(f"{pairs_file}: no pairs")
    folds = header[0] if header and header[0] > 0 else DEFAULT_FOLDS
    folds = max(1, min(folds, len(rows)))
    per_fold = math.ceil(len(rows) / folds)  # LFW: each fold is a block of N same + N different lines
    return [Pair(a, b, same, min(i // per_fold, folds - 1)) for i, (a, b, same) in enumerate(rows)], folds


def spread(pairs: list[Pair], limit: int) -> list[Pair]:
    """`limit` pairs evenly spaced through the file, so every fold and both kinds keep their share."""
    if limit <= 0 or limit >= len(pairs):
        return pairs
    keep = np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))
    return [pairs[i] for i in keep]


def embed_images(paths: list[Path], backend: str, int8: bool) -> tuple[dict[Path, np.ndarray | None], dict[str, float]]:
    """Largest face of each image, aligned and embedded; None where no face was found."""
    detector = YuNetDetector(DetectorConfig())
    config = EmbedderConfig(type=backend, int8=True) if int8 else EmbedderConfig(type=backend)
    embedder = create_embedder(config)
    result: dict[Path, np.ndarray | None] = {}
    embed_s, embed_cpu_s, embedded = 0.0, 0.0, 0
    for start in range(0, len(paths), EMBED_CHUNK):
        aligned: list[np.ndarray] = []
        owners: list[Path] = []
        for path in paths[start:start + EMBED_CHUNK]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            faces = detector.detect(image) if image is not None else []
            if not faces:
                result[path] = None
                if image is None:
                    print(f"unreadable image: {path}", file=sys.stderr)
                continue
            largest = max(faces, key=lambda f: f.box[2] * f.box[3])
            aligned.append(embedder.align(image, largest))
            owners.append(path)
        t, cpu = time.perf_counter(), time.process_time()
        result.update(zip(owners, embedder.embed_batch(aligned)))
        embed_s += time.perf_counter() - t
        embed_cpu_s += time.process_time() - cpu
        embedded += len(aligned)
    n = max(1, embedded)
    return result, {"wall_ms_per_face": round(embed_s * 1000 / n, 2),
                    "cpu_ms_per_face": round(embed_cpu_s * 1000 / n, 2)}


def verdicts(scores: np.ndarray, same: np.ndarray, failed: np.ndarray, threshold: float) -> np.ndarray:
    """Correct or not, per pair; a pair with a detection failure is always wrong."""
    return ((scores >= threshold) == same) & ~failed


def at_threshold(scores: np.ndarray, same: np.ndarray, failed: np.ndarray, threshold: float) -> dict[str, float]:
    accept = (scores >= threshold) & ~failed  # a missing face neither unlocks nor matches
    return {"threshold": threshold,
            "accuracy": float(verdicts(scores, same, failed, threshold).mean()),
            "tar": float(accept[same].mean()) if same.any() else float("nan"),
            "far": float(accept[~same].mean()) if (~same).any() else float("nan")}


def best_threshold(scores: np.ndarray, same: np.ndarray, failed: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoints between sorted scores)."""
    s = np.unique(scores[~failed])
    if len(s) == 0:
        return SFACE_COSINE_THRESHOLD
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    accuracy = [(verdicts(scores, same, failed, t).mean(), -abs(t - SFACE_COSINE_THRESHOLD)) for t in candidates]
    return float(candidates[max(range(len(candidates)), key=accuracy.__getitem__)])


def kfold(scores: np.ndarray, same: np.ndarray, failed: np.ndarray, folds: np.ndarray) -> dict[str, object]:
    accs: list[float] = []
    thresholds: list[float] = []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        if not train.any():  # a single fold: choose and test on the same pairs
            train = test
        t = best_threshold(scores[train], same[train], failed[train])
        thresholds.append(round(t, 4))
        accs.append(float(verdicts(scores[test], same[test], failed[test], t).mean()))
    return {"folds": len(accs), "accuracy": float(np.mean(accs)), "std": float(np.std(accs)),
            "thresholds": thresholds}


def tar_at_far(scores: np.ndarray, same: np.ndarray, failed: np.ndarray, far: float) -> dict[str, float]:
    """Accept above the impostor score that lets at most `far` of the different-person pairs through."""
    impostor = np.sort(scores[~same & ~failed])[::-1]
    n_impostor = int((~same).sum())
    allowed = int(math.floor(far * n_impostor))
    if len(impostor) == 0:
        threshold = -1.0
    else:
        threshold = float(impostor[allowed]) if allowed < len(impostor) else float(impostor[-1]) - 1e-6
    accept = (scores > threshold) & ~failed
    return {"far_target": far, "threshold": threshold,
            "tar": float(accept[same].mean()) if same.any() else float("nan"),
            "far": float(accept[~same].mean()) if n_impostor else float("nan"),
            "resolvable": n_impostor * far >= 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--threshold", type=float, default=IdentityConfig().name_threshold,
                        help="the naming threshold's floor ([identity] name_threshold)")
    parser.add_argument("--unlock-threshold", type=float, default=door_unlock_threshold(),
                        help="the door plugin's unlock threshold (default: its configured default)")
    parser.add_argument("--backend", choices=["opencv", "torch"], default="opencv")
    parser.add_argument("--int8", action="store_true", help="torch backend with int8 quantization")
    parser.add_argument("--limit", type=int, default=0, help="use this many pairs, spread through the file")
    args = parser.parse_args()
    if args.int8 and args.backend != "torch":
        parser.error("--int8 needs --backend torch")
    cv2.setNumThreads(1)
    configure_logging("json", "warning")

    started = time.perf_counter()
    pairs, n_folds = read_pairs(args.pairs, args.images)
    pairs = spread(pairs, args.limit)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vectors, embed_speed = embed_images(paths, args.backend, args.int8)
    same = np.array([p.same for p in pairs])
    failed = np.array([vectors[p.a] is None or vectors[p.b] is None for p in pairs])
    scores = np.array([float(vectors[p.a] @ vectors[p.b]) if not f else 0.0  # type: ignore[operator]
                       for p, f in zip(pairs, failed)])
    folds = np.array([p.fold for p in pairs])

    result = {
        "backend": args.backend + ("-int8" if args.int8 else ""),
        "pairs": len(pairs), "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
        "images": len(paths), "detection_failures": sum(v is None for v in vectors.values()),
        "pairs_with_failure": int(failed.sum()),
        "configured": at_threshold(scores, same, failed, args.threshold),
        "unlock": at_threshold(scores, same, failed, args.unlock_threshold),
        "kfold": kfold(scores, same, failed, folds),
        "tar_at_far": {f"{far:g}": tar_at_far(scores, same, failed, far) for far in FARS},
        "embedding": embed_speed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(result)
    print(json.dumps(result))


def print_table(r: dict) -> None:  # type: ignore[type-arg]
    print(f"backend {r['backend']}: {r['pairs']} pairs ({r['same_pairs']} same, {r['different_pairs']} different), "
          f"{r['images']} images, {r['detection_failures']} without a face ({r['pairs_with_failure']} pairs "
          "counted as errors)")
    print(f"{'measure':<38}{'threshold':>10}{'accuracy':>10}{'TAR':>8}{'FAR':>9}")
    for label, key in (("configured threshold", "configured"), ("door unlock threshold", "unlock")):
        m = r[key]
        print(f"{label:<38}{m['threshold']:>10.3f}{m['accuracy']:>10.2%}{m['tar']:>8.2%}{m['far']:>9.3%}")
    k = r["kfold"]
    label = f"{k['folds']}-fold (threshold from other folds)"
    print(f"{label:<38}{np.median(k['thresholds']):>10.3f}{k['accuracy']:>10.2%}   ± {k['std']:.2%}")
    for key, m in r["tar_at_far"].items():
        note = "" if m["resolvable"] else "  (too few different pairs for this FAR)"
        label = f"TAR at FAR {key}"
        print(f"{label:<38}{m['threshold']:>10.3f}{'':>10}{m['tar']:>8.2%}{m['far']:>9.3%}{note}")
    print(f"embedding {r['embedding']['wall_ms_per_face']} ms/face ({r['embedding']['cpu_ms_per_face']} ms CPU), "
          f"{r['seconds']} s in all")


if __name__ == "__main__":
    main()
