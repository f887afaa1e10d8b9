"""The quality gate in the running daemon (real detector, embedder, tracker and embedded resolver): a face not
worth naming costs no resolver call, no crop and no person, but is still a face for footfall and presence; a
track waits for a view that passes; a known person's poor views are never learnt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewatchd.hookspecs import hookimpl
from facewatchd.pipeline.cache import FaceCache
from facewatchd.plugins import PluginHost
from tests.support.daemon import cli, make_config, run_daemon
from tests.support.faces import face_square, write_frames


def darkened(face: np.ndarray) -> np.ndarray:
    return np.clip(255 * 0.15 * (face / 255.0) ** 2.4, 0, 255).astype(np.uint8)


class Ended:
    def __init__(self) -> None:
        self.tracks: list[Any] = []
        self.unknown: list[Any] = []

    @hookimpl
    def track_ended(self, event: Any) -> None:
        self.tracks.append(event)

    @hookimpl
    def unknown_face(self, event: Any) -> None:
        self.unknown.append(event)


def run(state: Path, frames: Path, **sections: Any) -> tuple[Any, Ended]:
    config = make_config(state, frames, **sections)
    host = PluginHost(config)
    ended = Ended()
    host.pm.register(ended, name="ended")
    return run_daemon(config, host), ended


def crops(state: Path) -> list[Path]:
    return sorted((state / "resolver").rglob("*.jpg"))


def test_a_face_not_worth_naming_is_a_face_but_never_a_person(tmp_path: Path) -> None:
    frames = write_frames(tmp_path / "frames", (darkened(face_square("obama.jpg")), 8))
    summary, ended = run(tmp_path / "gated", frames)
    assert summary.tracks == 1 and summary.tracks_not_worth_naming == 1
    assert summary.resolver_calls == 0 and summary.persons == {} and crops(tmp_path / "gated") == []
    assert [(t.face.person_id, t.frames) for t in ended.tracks] == [(None, 8)]  # footfall still counts it
    assert [(e.person_id, e.source) for e in ended.unknown] == [(None, "not worth naming")]  # once: someone is there

    # the same frames with the gate off: the dark face is sent and becomes a person (what the gate prevents)
    summary, _ = run(tmp_path / "open", frames, quality={"enabled": False})
    assert summary.resolver_calls == 1 and len(summary.persons) == 1 and len(crops(tmp_path / "open")) == 1


def test_a_track_waits_for_a_view_worth_naming(tmp_path: Path) -> None:
    face = face_square("obama.jpg")
    frames = write_frames(tmp_path / "frames", (darkened(face), 6), (face, 6))  # the light comes on mid-track
    summary, ended = run(tmp_path / "state", frames)
    assert summary.tracks == 1 and summary.tracks_not_worth_naming == 0
    assert summary.resolver_calls == 1 and len(summary.persons) == 1
    [crop] = crops(tmp_path / "state")
    assert cv2.imread(str(crop)).mean() > 60  # the view sent is the lit one, not the dark best-of-frames pick


def test_a_known_persons_poor_views_are_not_learnt(tmp_path: Path) -> None:
    face = face_square("obama.jpg")
    dim = np.clip(255 * 0.2 * (face / 255.0) ** 2.0, 0, 255).astype(np.uint8)  # him to SFace (0.95), but dark
    frames = write_frames(tmp_path / "frames", (face, 6), (dim, 30))

    def views_after(**sections: Any) -> int:
        target = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        target.mkdir()
        run(target, frames, cache={"new_view_below": 0.99}, **sections)  # any view that verifies is new
        cache = FaceCache(target / "cache.db")
        try:
            return len(cache.entries())
        finally:
            cache.close()

    gated, open_ = views_after(), views_after(quality={"enabled": False})
    assert gated < open_, (gated, open_)
