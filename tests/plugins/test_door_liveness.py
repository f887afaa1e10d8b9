"""Liveness at the door, end to end: the real daemon and pipeline, a real HTTP relay, real models and real photos
held up as rendered prints and screens (bench/attacks.py), and the live sample clip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from bench.attacks import AttackStyle, head_photo, held_over, render, write_video
from facewatchd.events import FaceEvent
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginHost
from facewatchd.vision.detector import YuNetDetector
from plugins.door import attack_crops_dir
from tests.plugins.conftest import Enrolled
from tests.plugins.support import HttpReceiver, run_in_loop
from tests.plugins.test_door import OBAMA, audit, http_backend
from tests.support.daemon import FIXTURES, SAMPLE_CLIP, cli, make_config, run_daemon

pytestmark = pytest.mark.timeout(240)
SPEAKER = "Lin-Manuel Miranda"


class Recorder:
    def __init__(self) -> None:
        self.attacks: list[tuple[FaceEvent, str]] = []
        self.named: list[FaceEvent] = []
        self.checked: list[FaceEvent] = []

    @hookimpl
    def presentation_attack(self, event: FaceEvent, detail: str) -> None:
        self.attacks.append((event, detail))

    @hookimpl
    def face_recognised(self, event: FaceEvent) -> None:
        self.named.append(event)

    @hookimpl
    def liveness_checked(self, event: FaceEvent) -> None:
        self.checked.append(event)


@pytest.fixture
def relay() -> Any:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def door(tmp_path: Path, relay: HttpReceiver, allow: list[str], **rules: Any) -> dict[str, Any]:
    return {"door": {"backend": http_backend(relay), "allow": allow, "audit_log": str(tmp_path / "audit.jsonl"),
                     **rules}}


def held_up(path: Path, photo: Path, kind: str, frames: int = 40, **style: Any) -> Path:
    """A photo of the person held up to the camera by hand, at 10 fps: printed on a card or shown on a phone."""
    image = cv2.imread(str(photo))
    face = max(YuNetDetector().detect(image), key=lambda f: f.box[2])
    write_video(render([head_photo(image, face.box)], frames, AttackStyle(kind=kind, **style)), path)  # type: ignore[arg-type]
    return path


def run_with(config: Any, *plugins: Any) -> Any:
    host = PluginHost(config)
    host.load()
    for i, plugin in enumerate(plugins):
        host.pm.register(plugin, name=f"test{i}")
    return run_daemon(config, host)


@pytest.mark.parametrize("kind", ["print", "screen"])
def test_a_photo_of_an_allowlisted_person_held_up_is_refused(tmp_path, enrolled: Enrolled, relay, kind):
    # Obama is enrolled from obama.jpg; the attacker holds up another photo of him, obama2.jpg
    attack = held_up(tmp_path / f"{kind}.avi", FIXTURES / "obama2.jpg", kind, card_px=240, seed=5)
    recorder = Recorder()
    config = make_config(enrolled.state(tmp_path), attack, plugins=door(tmp_path, relay, [OBAMA]))
    run_with(config, recorder)
    # who the face is stays as it was: liveness gates the door, never the name
    assert recorder.named and all(e.name == OBAMA for e in recorder.named)
    records = audit(tmp_path)
    assert [r["decision"] for r in records] == ["deny"], records
    [record] = records
    assert record["reason"] == "presentation attack" and record["name"] == OBAMA
    assert record["framed"] >= 2 or "judged an attack" in record["detail"], record
    assert record["liveness"] and all(0 <= s <= 1 for s in record["liveness"])
    crop = attack_crops_dir(tmp_path / "audit.jsonl") / record["crop"]
    assert cv2.imdecode(__import__("numpy").frombuffer(crop.read_bytes(), "uint8"), cv2.IMREAD_COLOR) is not None
    [(event, detail)] = recorder.attacks  # the hook fired once for the track
    assert event.track_id == record["track_id"] and detail == record["detail"]
    assert "/unlock" not in relay.paths()
    # The same attack without liveness opens the door: what this test refuses is a real attack.
    (tmp_path / "audit.jsonl").unlink()
    config = make_config(enrolled.state(tmp_path / "again"), attack,
                         plugins=door(tmp_path, relay, [OBAMA], liveness={"enabled": False}))
    run_with(config)
    assert "/unlock" in relay.paths(), audit(tmp_path)


def test_a_frame_judged_an_attack_ends_the_track_for_the_door(tmp_path, enrolled: Enrolled, relay):
    # with the edge cue off, the models alone: a dim, blurred print scores as an attack frame after frame
    attack = held_up(tmp_path / "dim.avi", FIXTURES / "obama2.jpg", "print", card_px=200, light=0.6, blur=1.5,
                     seed=2)
    config = make_config(enrolled.state(tmp_path), attack,
                         plugins=door(tmp_path, relay, [OBAMA], liveness={"framed_frames": 0}))
    run_with(config)
    [record] = audit(tmp_path)
    assert record["reason"] == "presentation attack" and "judged an attack" in record["detail"], record
    assert "/unlock" not in relay.paths()


def test_a_photo_shown_for_the_embeddings_then_lowered_for_a_live_face_is_refused(tmp_path, enrolled: Enrolled,
                                                                                    relay):
    # A stranger (the sample clip's speaker, not enrolled) holds a print of Obama over his own face for 12
    # frames, long enough for two embeddings of Obama, then lowers it: his own live face is in the same box.
    detector = YuNetDetector()
    clip = cv2.VideoCapture(str(SAMPLE_CLIP))
    clip.set(cv2.CAP_PROP_POS_FRAMES, 120)  # inside the speaker's long close-up
    frames = [clip.read()[1] for _ in range(40)]
    faces = [max(detector.detect(f), key=lambda f: f.box[2]).box for f in frames]
    obama = cv2.imread(str(FIXTURES / "obama2.jpg"))
    video = tmp_path / "swap.avi"
    write_video(held_over(frames, faces, obama, max(detector.detect(obama), key=lambda f: f.box[2]).box, 12), video,
                fps=30, size=(frames[0].shape[1], frames[0].shape[0]))
    # With the appearance check off, the track is embedded again only on its beat, so for some frames it is
    # the live stranger's face under Obama's name: the door's own guard (the frames judged live must be the
    # frames verified as the person) is what refuses it.
    config = make_config(enrolled.state(tmp_path), video, plugins=door(tmp_path, relay, [OBAMA]),
                         identity={"reverify_resemblance": 0.0, "reverify_unlike": 0.0})
    run_with(config)
    records = audit(tmp_path)
    assert not [r for r in records if r["decision"] == "grant"] and "/unlock" not in relay.paths(), records
    [refused] = [r for r in records if r["name"] == OBAMA]  # the print was named Obama: only liveness refused it
    assert refused["detail"] == "the frames judged live are not the frames whose face was verified", refused
    # With it on (the default), lowering the print changes the face's appearance: the stranger is embedded at
    # once, does not verify as Obama and is split off, so Obama's track only ever showed the print.
    (tmp_path / "audit.jsonl").unlink()
    config = make_config(enrolled.state(tmp_path / "default"), video, plugins=door(tmp_path, relay, [OBAMA]))
    run_with(config)
    records = audit(tmp_path)
    assert not [r for r in records if r["decision"] == "grant"] and "/unlock" not in relay.paths(), records
    [refused] = [r for r in records if r["name"] == OBAMA]
    assert refused["reason"] == "liveness not shown" and "judged live in a row" in refused["detail"], refused


def test_a_photo_held_close_enough_to_hide_its_edges_is_refused_for_lack_of_depth(tmp_path, enrolled: Enrolled,
                                                                                  relay):
    close = held_up(tmp_path / "close.avi", FIXTURES / "obama2.jpg", "print", card_px=800, hand=False, sway_deg=8,
                    approach=0.1, seed=4)
    config = make_config(enrolled.state(tmp_path), close, plugins=door(tmp_path, relay, [OBAMA]))
    run_with(config)
    [record] = audit(tmp_path)
    assert record["reason"] == "liveness not shown" and "no depth" in record["detail"], record
    assert record["framed"] == 0 and "/unlock" not in relay.paths()  # no edges in view: depth alone stops it
    (tmp_path / "audit.jsonl").unlink()
    config = make_config(enrolled.state(tmp_path / "again"), close,
                         plugins=door(tmp_path, relay, [OBAMA], liveness={"min_parallax": 0}))
    run_with(config)
    assert "/unlock" in relay.paths(), audit(tmp_path)  # without the depth cue the models let it in


def test_attack_frames_count_by_frame_even_when_the_clock_steps_back():
    from facewatchd.events import LivenessSample
    from plugins.door.liveness import DoorLivenessConfig, LivenessTally, judge

    config, tally = DoorLivenessConfig(), LivenessTally()
    samples: list[LivenessSample] = []
    for frame, ts, score in [(1, 1000.1, 0.9), (2, 1000.2, 0.9), (3, 940.3, 0.05), (4, 940.4, 0.05)]:
        samples.append(LivenessSample(ts, frame, score, 0.3, False, frame == 1))  # NTP stepped the clock back
        verdict, detail = judge(config, FaceEvent("cam", "t", ts, "p", OBAMA, liveness=tuple(samples)), tally)
    assert verdict == "attack" and "2 frame(s) judged an attack" in detail


async def test_after_an_attack_the_person_waits_before_another_try_on_that_camera():
    from facewatchd.events import LivenessSample
    from plugins.door import DoorConfig, Plugin

    door_plugin = Plugin()
    door_plugin.config = DoorConfig(backend={"type": "http", "unlock_url": "http://x/u", "lock_url": "http://x/l"},
                                    allow=[OBAMA], audit_log=None)
    door_plugin._spawn = lambda tasks, make: None  # decisions only: no audit file, no relay
    reasons: list[str] = []
    door_plugin._record = lambda event, decision, reason, detail: reasons.append(reason) or {}  # type: ignore
    attack = tuple(LivenessSample(i / 10, i, 0.05, 0.0, False, i == 0) for i in range(3))
    door_plugin._consider(FaceEvent("cam", "t1", 0.2, "person-o", OBAMA, 0.8, 3, ((0.0, 0.8),), liveness=attack))
    live = tuple(LivenessSample(i / 10, i, 0.99, 0.3, False, True) for i in range(10, 16))
    retry = FaceEvent("cam", "t2", 1.5, "person-o", OBAMA, 0.8, 3, ((1.0, 0.8), (1.5, 0.8)), liveness=live)
    door_plugin._consider(retry)
    assert reasons == ["presentation attack", "blocked after an attack"]
    other_camera = FaceEvent("cam2", "t3", 1.5, "person-o", OBAMA, 0.8, 3, ((1.0, 0.8), (1.5, 0.8)), liveness=live)
    door_plugin._consider(other_camera)
    assert reasons[-1] == "allowlisted"


@pytest.fixture(scope="module")
def speaker_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample clip seen once, its main speaker named by the operator (and his far-away opening shot
    merged into him), as a new user does after the first run."""
    from tests.test_daemon import TrackLog

    state = tmp_path_factory.mktemp("speaker") / "state"
    config = make_config(state, SAMPLE_CLIP)
    log = TrackLog()
    run_with(config, log)
    longest, opening = log.longest_and_opening()
    config_file = state.parent / "c.toml"
    config_file.write_text(f'[device]\nstate_dir = "{state}"\n')
    cli("faces", "label", longest, SPEAKER, "--config", str(config_file))
    cli("faces", "merge", longest, opening, "--config", str(config_file))
    return state


def test_the_live_clip_still_opens_the_door_as_before(tmp_path, speaker_state: Path, relay):
    def grants(liveness: bool) -> list[dict[str, Any]]:
        """Each track's first grant. No cooldown: it counts wall time, and the file plays as fast as the machine
        allows, so a cooldown would cut a different number of grants from each run under load."""
        audit_log = tmp_path / f"audit-{liveness}.jsonl"
        rules = door(tmp_path, relay, [SPEAKER], cooldown_s=0, liveness={"enabled": liveness})
        rules["door"]["audit_log"] = str(audit_log)
        import shutil
        state = tmp_path / f"state-{liveness}"
        shutil.copytree(speaker_state, state)
        run_with(make_config(state, SAMPLE_CLIP, plugins=rules))
        records = [json.loads(line) for line in audit_log.read_text().splitlines()]
        first: dict[str, dict[str, Any]] = {}
        for r in records:
            if r["decision"] == "grant":
                # the track's number in the run (ids are <camera>-<run>-<n>); a split part counts with its track
                first.setdefault(int(r["track_id"].split(".s")[0].rsplit("-", 1)[1]), r)
        return [first[n] for n in sorted(first)]

    without, with_liveness = grants(False), grants(True)
    assert without, "the speaker opens the door without liveness"
    number = lambda g: g["track_id"].split(".s")[0].rsplit("-", 1)[1]  # noqa: E731
    assert [number(g) for g in with_liveness] == [number(g) for g in without]  # the same tracks are let in
    fps = cv2.VideoCapture(str(SAMPLE_CLIP)).get(cv2.CAP_PROP_FPS)
    for before, now in zip(without, with_liveness):
        # at most half a second later: five live frames in a row, and depth shown once by each new track
        assert round(now["camera_ts"] * fps) <= round(before["camera_ts"] * fps) + 15, (before, now)
        assert all(s >= 0.6 for s in now["liveness"][-1:]) and now["framed"] == 0


async def test_only_the_doors_cameras_and_allowlist_pay_for_liveness(tmp_path, enrolled: Enrolled, relay):
    visit = held_up(tmp_path / "visit.avi", FIXTURES / "obama2.jpg", "print", frames=12, card_px=240, seed=1)
    recorder = Recorder()
    config = make_config(enrolled.state(tmp_path), visit, visit, FIXTURES / "biden.jpg",
                         plugins=door(tmp_path, relay, [OBAMA], cameras=["cam0"]))
    host = PluginHost(config)
    host.load()
    host.pm.register(recorder, name="recorder")
    daemon, _ = await run_in_loop(config, host)
    assert daemon.liveness is not None and daemon.liveness.checked > 0
    assert {e.camera for e in recorder.checked} == {"cam0"}  # cam1 has no door, cam2 shows Biden (not allowed)
    assert all(not e.liveness for e in recorder.named if e.camera != "cam0")
    # without a door (or a [liveness] camera) nothing is built: no model loaded, no frame checked
    plain = make_config(tmp_path / "plain", FIXTURES / "obama2.jpg")
    host = PluginHost(plain)
    host.load()
    daemon, _ = await run_in_loop(plain, host)
    assert daemon.liveness is None
    # a camera the config names is checked for every recognised track, with no door at all
    recorder = Recorder()
    named = make_config(enrolled.state(tmp_path / "named"), FIXTURES / "biden.jpg", FIXTURES / "biden.jpg",
                        liveness={"cameras": ["cam1"]})
    host = PluginHost(named)
    host.load()
    host.pm.register(recorder, name="recorder")
    daemon, _ = await run_in_loop(named, host)
    assert daemon.liveness is not None and {e.camera for e in recorder.checked} == {"cam1"}


def test_a_door_without_its_liveness_model_does_not_start(tmp_path, relay):
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'''
[device]
state_dir = "{tmp_path / 'state'}"
[[cameras]]
id = "door"
source = "{FIXTURES / 'obama2.jpg'}"
[liveness]
models_dir = "{tmp_path / 'no-models'}"
[plugins.door]
allow = ["{OBAMA}"]
audit_log = "{tmp_path / 'audit.jsonl'}"
[plugins.door.backend]
type = "http"
unlock_url = "{relay.url('/unlock')}"
lock_url = "{relay.url('/lock')}"
''')
    proc = cli("run", "--config", str(config_file), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "2.7_80x80_MiniFASNetV2.onnx is missing" in proc.stderr and "Traceback" not in proc.stderr
    assert "/unlock" not in relay.paths() and "/lock" in relay.paths()  # locked at start, never opened
