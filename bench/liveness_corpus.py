"""The attack corpus of bench/liveness.py: rendered sequences (bench/attacks.py) of LFW people, each enrolled
from one photo and attacked with another, and the sample clip's longest shot replayed on a tablet."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.attacks import AttackStyle, render, write_video
from facewatchd.vision.detector import YuNetDetector

FPS = 10.0


@dataclass
class Sequence:
    name: str
    kind: str  # attack type, or "bona fide"
    path: Path  # a video or a picture
    frames: int = 0


def longest_shot(clip: Path, detector: YuNetDetector) -> list[np.ndarray]:
    """The clip's longest run of frames without a scene cut and with a face of at least 80 px: its close-up."""
    from facewatchd.pipeline.motion import shrink
    from facewatchd.pipeline.tracker import SceneCutDetector

    capture, cuts = cv2.VideoCapture(str(clip)), SceneCutDetector(0.12)
    shots: list[list[np.ndarray]] = [[]]
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if cuts.is_cut(shrink(frame)):
            shots.append([])
        shots[-1].append(frame)
    best = max(shots, key=len)
    return best


def rendered_corpus(lfw: Path, people: int, frames: int, out: Path, detector: YuNetDetector,
                    seed: int) -> tuple[list[Sequence], dict[str, Path]]:
    """Attack sequences and, per allowlisted name, the photo they are enrolled from (never the attack's)."""
    rng = random.Random(seed)
    folders = sorted(p for p in lfw.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    chosen = rng.sample(folders, min(people + people // 4, len(folders)))  # some have no one-face photo
    sequences: list[Sequence] = []
    enrol: dict[str, Path] = {}
    for i, folder in enumerate(chosen):
        photos = sorted(folder.glob("*.jpg"))
        # enrolled from a photo with one face only (as `faces enroll` requires), attacked with another
        alone = [p for p in photos if len(detector.detect(cv2.imread(str(p)))) == 1]
        if not alone or len(enrol) == people:
            continue
        enrol[folder.name.replace("_", " ")] = alone[0]
        attack = cv2.imread(str(next(p for p in photos if p != alone[0])))
        attack = cv2.resize(attack, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)  # printed larger
        for kind in ("print", "screen"):
            style = AttackStyle(kind=kind, card_px=rng.choice([160, 220, 300]), light=rng.choice([0.6, 1.0, 1.3]),
                                blur=rng.choice([0.0, 0.0, 1.0, 2.0]), sway_deg=rng.choice([8.0, 18.0, 28.0]),
                                approach=rng.choice([0.1, 0.3, 0.5]), seed=seed * 1000 + i * 2 + len(kind))
            path = out / f"{kind}-{folder.name}.avi"
            n = write_video(render([attack], frames, style), path, FPS)
            sequences.append(Sequence(f"{kind} {folder.name} {style.card_px:.0f}px light {style.light} "
                                      f"blur {style.blur}", f"{'print' if kind == 'print' else 'screen photo'}",
                                      path, n))
        if i % 2 == 0:  # every other person also close up (the card's edges out of view) and as a cut-out
            kind = "print" if i % 4 == 0 else "screen"
            close = AttackStyle(kind=kind, card_px=rng.choice([700.0, 850.0]), light=rng.choice([0.8, 1.0, 1.2]),
                                sway_deg=rng.choice([6.0, 12.0]), approach=0.1, hand=False, seed=seed * 1000 + i)
            path = out / f"close-{folder.name}.avi"
            n = write_video(render([attack], frames, close), path, FPS)
            sequences.append(Sequence(f"close-up {kind} {folder.name} {close.card_px:.0f}px", "close-up", path, n))
            cut = AttackStyle(kind="cutout", card_px=rng.choice([260.0, 360.0]), sway_deg=rng.choice([8.0, 18.0]),
                              approach=0.2, hand=False, seed=seed * 1000 + 500 + i)
            path = out / f"cutout-{folder.name}.avi"
            n = write_video(render([attack], frames, cut), path, FPS)
            sequences.append(Sequence(f"cut-out {folder.name} {cut.card_px:.0f}px", "cut-out", path, n))
    return sequences, enrol


def replay_corpus(clip: Path, frames: int, out: Path, detector: YuNetDetector, seed: int) -> list[Sequence]:
    shot = longest_shot(clip, detector)
    sequences = []
    for i, (card_px, light, blur) in enumerate([(200, 1.0, 0.0), (260, 1.2, 0.0), (320, 1.0, 1.0),
                                                (240, 0.7, 0.0), (300, 1.0, 0.0), (180, 1.3, 0.5)]):
        style = AttackStyle(kind="screen", card_px=card_px, light=light, blur=blur, sway_deg=10.0, approach=0.2,
                            hand=False, seed=seed * 1000 + 500 + i)
        path = out / f"replay-{i}.avi"
        n = write_video(render(shot, max(frames, len(shot)), style), path, FPS)
        sequences.append(Sequence(f"replay clip {card_px}px light {light} blur {blur}", "screen video", path, n))
    return sequences
