"""The motion gate on real video: an empty scene costs no detections, a face walking in is detected at
once, camera noise and flickering light do not hold the gate open."""

import pytest

from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginHost

from facewatchd.pipeline.motion import MotionConfig, MotionGate, shrink
from tests.support.daemon import make_config, run_daemon
from tests.support.faces import doorway, face_square, write_video


def openings(images, config=None):
    gate = MotionGate(config)
    return [i for i, image in enumerate(images) if gate.opens(shrink(image))]


@pytest.mark.parametrize("flicker", [0.0, 12.0])
def test_an_empty_scene_with_noise_and_flicker_stays_shut(flicker):
    images = doorway(None, 300, enter_at=300, noise=4.0, flicker=flicker)
    opened = openings(images)
    # the first frame (no background yet), then only the refresh bound
    assert opened == [0, 150], opened


def test_a_face_walking_in_opens_the_gate_in_the_frame_it_enters():
    images = doorway(face_square("obama.jpg"), 60, enter_at=30, noise=4.0, flicker=12.0)
    opened = openings(images)
    assert opened[0] == 0 and 30 in opened and not set(opened) & set(range(1, 30))


@pytest.mark.parametrize("relight", [lambda image: image // 2, lambda image: (image.astype(int) + 25).clip(0, 255)])
def test_a_change_of_light_is_not_motion(relight):
    images = doorway(None, 40, enter_at=40, noise=2.0)
    images[20:] = [relight(image).astype("uint8") for image in images[20:]]
    assert openings(images) == [0]


def test_disabled_gate_opens_every_frame():
    images = doorway(None, 5, enter_at=5)
    assert openings(images, MotionConfig(enabled=False)) == list(range(5))


class Sightings:
    """A plugin that notes when each track was first seen, in the video's own clock."""

    def __init__(self):
        self.started = []

    @hookimpl
    def face_detected(self, event):
        self.started.append(round(event.ts, 3))


@pytest.mark.slow
def test_the_daemon_skips_still_frames_and_finds_the_same_faces(tmp_path):
    face = face_square("obama.jpg")
    video = write_video(tmp_path / "doorway.avi", doorway(None, 120, 120, noise=4.0, flicker=4.0)
                        + doorway(face, 150, enter_at=0, noise=4.0, flicker=4.0, seed=2)  # walks in, stands still
                        + doorway(None, 120, 120, noise=4.0, flicker=4.0, seed=3))
    runs = {}
    for gated in (True, False):
        config = make_config(tmp_path / f"state-{gated}", video, motion={"enabled": gated})
        host = PluginHost(config)
        host.load()
        sightings = Sightings()
        host.pm.register(sightings, name="sightings")
        runs[gated] = run_daemon(config, host), sightings.started
    (on, seen_on), (off, seen_off) = runs[True], runs[False]
    assert off.frames_gated == 0 and off.tracks >= 1
    # the empty stretches are skipped: all but the 150 frames with the face and at most 45 more (the first
    # frame, the refresh bound, the tail a track lives on after its face has gone, the background settling
    # back once the face has left: about 35 frames at background_rate 0.05)
    assert on.frames_gated >= 390 - 150 - 45
    assert seen_on == seen_off  # the same tracks, first seen in the same frame
    assert (on.faces, on.tracks, on.resolver_calls) == (off.faces, off.tracks, off.resolver_calls)
    assert sorted(on.persons.values(), key=str) == sorted(off.persons.values(), key=str)  # ids are new each run
