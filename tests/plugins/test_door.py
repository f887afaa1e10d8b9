"""The door plugin on the real pipeline: enrolled faces, real photos as frames, a real HTTP relay, a real
broker, and libgpiod's real Python bindings (the GPIO chip itself is a test double: no gpio-sim here)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginHost
from plugins.door import DAYS, Window
from tests.plugins.conftest import Enrolled
from tests.plugins.support import HttpReceiver, eventually, frames_dir, run_in_loop
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, make_config, run_daemon

pytestmark = pytest.mark.timeout(120)
OBAMA, BIDEN = "Barack Obama", "Joe Biden"


@pytest.fixture
def relay() -> Any:
    receiver = HttpReceiver()
    yield receiver
    receiver.close()


def door(tmp_path: Path, backend: dict[str, Any], **rules: Any) -> dict[str, Any]:
    # An image folder's frames are one second apart in camera time: embeddings 10 frames apart are 10 s apart.
    rules.setdefault("evidence_window_s", 30)
    # These visits are still photos repeated as frames, which liveness refuses (a flat picture, no depth):
    # they test the other rules; tests/plugins/test_door_liveness.py tests liveness.
    rules.setdefault("liveness", {"enabled": False})
    return {"door": {"backend": backend, "allow": [OBAMA], "audit_log": str(tmp_path / "audit.jsonl"), **rules}}


def http_backend(relay: HttpReceiver, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "unlock_url": relay.url("/unlock"), "lock_url": relay.url("/lock"), **extra}


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_allowlisted_face_unlocks_once_per_visit_and_others_are_denied(tmp_path, enrolled: Enrolled, relay):
    # cam0: Obama, a scene cut, Obama again (a second visit, inside the cooldown); cam1: Biden (enrolled,
    # not allowed); cam2: a stranger the resolver knows but nobody named.
    # 12 frames a visit: named at the first, verified again at the 11th (identity.reverify_frames = 10)
    visits = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12), ("blank", 1), (FIXTURES / "obama2.jpg", 12))
    biden = frames_dir(tmp_path / "biden", (FIXTURES / "biden.jpg", 12))
    stranger = frames_dir(tmp_path / "stranger", (enrolled.stranger, 12))
    config = make_config(enrolled.state(tmp_path), visits, biden, stranger,
                         plugins=door(tmp_path, http_backend(relay), cooldown_s=3600, unlock_s=60))
    summary = run_daemon(config)
    assert summary.frames == 49 and summary.resolver_calls == 0  # every face named from the device cache

    records = audit(tmp_path)
    grants = [r for r in records if r["decision"] == "grant"]
    # two of the track's own embeddings agreed (the first frame's and the 11th's), not merely frames followed
    assert [(g["name"], g["camera"], len(g["evidence"])) for g in grants] == [(OBAMA, "cam0", 2)]
    assert all(e >= 0.5 for e in grants[0]["evidence"]) and grants[0]["agreed_frames"] == 11
    assert grants[0]["similarity"] >= 0.5 and grants[0]["person_id"] == enrolled.person_id(OBAMA)
    denials = {(r["camera"], r["reason"]) for r in records if r["decision"] == "deny"}
    assert denials == {("cam0", "cooldown"), ("cam1", "not on allowlist"), ("cam2", "unknown face")}, records
    biden_denial = next(r for r in records if r["camera"] == "cam1")
    assert biden_denial["name"] == BIDEN and biden_denial["track_id"]
    second_visit = next(r for r in records if r["reason"] == "cooldown")
    assert second_visit["track_id"] != grants[0]["track_id"]
    # the relay: locked at start, one unlock, locked again when the daemon stopped (unlock_s not over)
    assert relay.paths() == ["/lock", "/unlock", "/lock"]


def test_face_between_recognition_and_unlock_thresholds_is_denied(tmp_path, enrolled: Enrolled, relay):
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama3.jpg", 6))
    config = make_config(enrolled.state(tmp_path), visit,
                         plugins=door(tmp_path, http_backend(relay), unlock_threshold=0.99))
    summary = run_daemon(config)
    assert [p["name"] for p in summary.persons.values()] == [OBAMA]  # recognised (above 0.363)…
    [record] = audit(tmp_path)
    assert record["decision"] == "deny" and record["reason"] == "below unlock threshold", record
    assert 0.363 <= record["similarity"] < 0.99 and "< 0.99" in record["detail"]
    assert "/unlock" not in relay.paths()  # …but the door never opened


def test_outside_the_schedule_is_denied(tmp_path, enrolled: Enrolled, relay):
    other_days = [d for d in DAYS if d != DAYS[datetime.now().weekday()]]
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    config = make_config(enrolled.state(tmp_path), visit, plugins=door(
        tmp_path, http_backend(relay), schedule=[{"days": other_days, "start": "00:00", "end": "23:59"}]))
    run_daemon(config)
    [record] = audit(tmp_path)
    assert (record["decision"], record["reason"]) == ("deny", "outside schedule")
    assert "/unlock" not in relay.paths()


def test_schedule_windows_including_overnight():
    day = Window.model_validate({"days": ["mon"], "start": "07:30", "end": "19:00"})
    night = Window.model_validate({"days": ["fri"], "start": "22:00", "end": "06:00"})
    monday = datetime(2024, 1, 1)  # a Monday
    assert day.contains(monday.replace(hour=7, minute=30)) and not day.contains(monday.replace(hour=19))
    assert not day.contains(datetime(2024, 1, 2, 12))  # Tuesday
    assert night.contains(datetime(2024, 1, 5, 23)) and night.contains(datetime(2024, 1, 6, 5, 59))  # Fri night
    assert not night.contains(datetime(2024, 1, 6, 23)) and not night.contains(datetime(2024, 1, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        Window.model_validate({"start": "08:00", "end": "08:00"})


def test_too_few_agreeing_embeddings_is_denied_when_the_track_ends(tmp_path, enrolled: Enrolled, relay):
    # ten frames followed, but only one embedding of the track (the next is due at the 11th frame)
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 10))
    config = make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, http_backend(relay)))
    run_daemon(config)
    [record] = audit(tmp_path)
    assert (record["decision"], record["reason"], record["detail"]) == ("deny", "too few agreeing embeddings",
                                                                        "1 of 2 recent embeddings agreed")
    assert len(record["evidence"]) == 1
    assert "/unlock" not in relay.paths()


@pytest.mark.parametrize("fault", ["error", "timeout"])
def test_failing_relay_leaves_the_door_locked(tmp_path, enrolled: Enrolled, relay, fault):
    relay.answers["/unlock"] = (500, 0.0) if fault == "error" else (200, 3.0)
    # 25 frames at 10 fps: the visit lasts 2.5 s, so the 0.5 s timeout runs out while the face is there
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 25))
    config = make_config(enrolled.state(tmp_path), visit,
                         cameras=[{"id": "cam0", "source": str(visit), "pace": "realtime", "fps": 10}],
                         plugins=door(tmp_path, http_backend(relay, timeout_s=0.5), cooldown_s=3600))
    run_daemon(config)
    records = audit(tmp_path)
    assert records and all(r["decision"] == "deny" and r["reason"] == "backend failed" for r in records), records
    assert all(("HTTP 500" in r["detail"]) if fault == "error" else (r["detail"] == "timed out") for r in records)
    # each failed unlock (2 embeddings at frame 11, and 3 at 21 may retry) is followed at once by a lock, and the
    # last word is lock
    paths = relay.paths()
    assert paths[0] == "/lock" and paths[-1] == "/lock" and 1 <= paths.count("/unlock") <= 2
    assert all(paths[i + 1] == "/lock" for i, p in enumerate(paths) if p == "/unlock")


async def test_mqtt_backend_publishes_unlock_then_lock(tmp_path, enrolled: Enrolled, broker: Mosquitto):
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    backend = {"type": "mqtt", "host": broker.host, "port": broker.port, "command_topic": "zigbee2mqtt/front/set",
               "payload_unlock": '{"state":"UNLOCK"}', "payload_lock": '{"state":"LOCK"}'}
    config = make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, backend, unlock_s=0.3))
    commands: list[bytes] = []

    async with aiomqtt.Client(broker.host, broker.port, identifier="lock") as lock:
        await lock.subscribe("zigbee2mqtt/front/set", qos=1)

        async def read() -> None:
            async for message in lock.messages:
                commands.append(bytes(message.payload))  # type: ignore[arg-type]

        reader = asyncio.create_task(read())
        host = PluginHost(config)
        host.load()

        async def relocked(_: Any) -> None:  # the unlock_s timer, not the stop, locks again
            await eventually(lambda: commands[-2:] == [b'{"state":"UNLOCK"}', b'{"state":"LOCK"}'], what="relock")

        await run_in_loop(config, host, until=relocked)
        reader.cancel()
    assert commands.count(b'{"state":"UNLOCK"}') == 1
    assert commands[-1] == b'{"state":"LOCK"}'
    assert [r["decision"] for r in audit(tmp_path)] == ["grant"]


class FakeLineRequest:
    """libgpiod v2's LineRequest, as far as the door uses it (set_value, get_value, release), over a
    fake chip: the values it holds are what a relay on the line would see."""

    def __init__(self, chip: "FakeChip", config: dict[Any, Any], consumer: str | None) -> None:
        import gpiod

        self.chip, self.consumer, self.released = chip, consumer, False
        self.offsets = []
        for line, settings in config.items():
            assert isinstance(settings, gpiod.LineSettings)  # the real class, built by the door plugin
            assert settings.direction == gpiod.line.Direction.OUTPUT
            self.offsets.append(line)
            chip.levels[line] = [settings.output_value]

    def _check(self) -> None:
        import gpiod

        if self.released:
            raise gpiod.RequestReleasedError()

    def set_value(self, line: int | str, value: Any) -> None:
        import gpiod

        self._check()
        assert isinstance(value, gpiod.line.Value) and line in self.offsets
        self.chip.levels[line].append(value)

    def get_value(self, line: int | str) -> Any:
        self._check()
        return self.chip.levels[line][-1]

    def release(self) -> None:
        self._check()
        self.released = True


class FakeChip:
    def __init__(self, path: str) -> None:
        self.path = path
        self.levels: dict[Any, list[Any]] = {}
        self.requests: list[FakeLineRequest] = []

    def request_lines(self, path: str, config: dict[Any, Any], consumer: str | None = None, **_: Any) -> Any:
        if path != self.path:
            raise FileNotFoundError(2, "No such file or directory", path)
        request = FakeLineRequest(self, config, consumer)
        self.requests.append(request)
        return request


def test_gpio_backend_drives_the_line_and_releases_it(tmp_path, enrolled: Enrolled, monkeypatch):
    import gpiod  # the `gpio` extra (in dev): the real bindings and their types
    chip = FakeChip("/dev/gpiochip7")
    monkeypatch.setattr(gpiod, "request_lines", chip.request_lines)
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    backend = {"type": "gpio", "chip": "/dev/gpiochip7", "line": 17}
    run_daemon(make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, backend, unlock_s=30)))
    Value = gpiod.line.Value
    # requested inactive (locked), locked again at start, unlocked once, locked at stop
    assert chip.levels[17] == [Value.INACTIVE, Value.INACTIVE, Value.ACTIVE, Value.INACTIVE]
    assert [r.consumer for r in chip.requests] == ["facewatchd-door"] and chip.requests[0].released
    assert [r["decision"] for r in audit(tmp_path)] == ["grant"]


def test_gpio_chip_missing_denies_with_the_real_bindings_error(tmp_path, enrolled: Enrolled):
    import gpiod  # noqa: F401  # the real bindings (in dev), whose error the denial carries
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    backend = {"type": "gpio", "chip": str(tmp_path / "no-such-gpiochip"), "line": 17}
    run_daemon(make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, backend)))
    records = audit(tmp_path)
    denial = next(r for r in records if r.get("reason") == "backend failed")
    assert "no-such-gpiochip" in denial["detail"] or "No such file" in denial["detail"], denial
    assert not any(r["decision"] == "grant" for r in records)


class DoorStatus:
    """Records the door_status hook, as an alerting plugin would see it."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, int]] = []

    @hookimpl
    def door_status(self, door: str, locked: bool, failures: int, detail: str) -> None:
        self.calls.append((locked, failures))


async def test_a_lock_that_does_not_answer_is_retried_until_it_does(tmp_path, enrolled: Enrolled, relay):
    """The relay refuses `lock` (HTTP 503) at start: the plugin keeps locking with backoff, alerts and
    counts while it fails, and stops only once the lock is confirmed. No give-up after a few tries."""
    relay.answers["/lock"] = (503, 0.0)
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 1))
    config = make_config(enrolled.state(tmp_path), visit,
                         cameras=[{"id": "cam0", "source": str(visit), "loop": True, "fps": 5, "pace": "realtime"}],
                         plugins=door(tmp_path, http_backend(relay), relock_backoff_max_s=0.4))
    host = PluginHost(config)
    host.load()
    status = DoorStatus()
    host.register("status", status, "test")
    door_plugin = next(p for name, p in host.pm.list_name_plugin() if name == "door")

    async def refused_then_healed(_: Any) -> None:
        # the relay answers before the plugin counts: wait on both (five refusals sent, five counted)
        await eventually(lambda: relay.paths().count("/lock") >= 5 and door_plugin.lock_failures >= 5
                         and len(status.calls) >= 5, 30, what="five refused locks, counted and reported")
        assert door_plugin.locked is False
        assert [locked for locked, _ in status.calls][:5] == [False] * 5  # each failure reported
        relay.answers.pop("/lock")  # the relay comes back
        await eventually(lambda: door_plugin.locked is True, 10, what="the lock to be confirmed")
        await eventually(lambda: status.calls and status.calls[-1][0] is True, 5, what="door_status locked")

    await run_in_loop(config, host, until=refused_then_healed)
    records = audit(tmp_path)
    assert [r["decision"] for r in records if r["decision"] in ("lock failed", "locked")] == ["lock failed", "locked"]


def test_the_door_locks_before_the_daemon_opens_its_state(tmp_path, enrolled: Enrolled, relay):
    """A daemon whose state is unusable (here: another daemon holds the state directory) still locks the
    door first, and exits with a clear error rather than a traceback."""
    from facewatchd.state import StateDirLock, StateError

    state = enrolled.state(tmp_path)
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 1))
    config = make_config(state, visit, plugins=door(tmp_path, http_backend(relay)))
    with StateDirLock(state), pytest.raises(StateError, match="already in use"):
        run_daemon(config)
    assert relay.paths()[0] == "/lock" and relay.paths()[-1] == "/lock"


def live_frames(now: float) -> tuple[Any, ...]:
    """Five frames in a row up to `now`, verified as the person, judged live, with depth, nothing framed."""
    from facewatchd.events import LivenessSample

    return tuple(LivenessSample(now - 0.1 * i, 100 - i, 0.99, 0.3, False, True) for i in (4, 3, 2, 1, 0))


def test_only_fresh_agreeing_embeddings_count():
    """Two strong embeddings long ago and a weak one now are not fresh evidence: the door waits; two
    strong ones within the window grant. (The door's rule itself, on the events the recognizer sends.)"""
    from facewatchd.events import FaceEvent
    from plugins.door import DoorConfig, Plugin, TrackMemory

    config = DoorConfig(backend={"type": "http", "unlock_url": "http://x/u", "lock_url": "http://x/l"},
                        allow=[OBAMA], evidence_window_s=5)
    door = Plugin()

    def verdict(evidence: tuple[tuple[float, float], ...]) -> Any:
        now = evidence[-1][0]
        event = FaceEvent("cam", "t1", now, "person-o", OBAMA, evidence[-1][1], 30, evidence,
                          liveness=live_frames(now))
        return door._verdict(config, event, TrackMemory())

    assert verdict(((0.0, 0.8), (1.0, 0.8), (20.0, 0.55))) is None  # stale: waits for more
    assert verdict(((0.0, 0.8), (1.0, 0.8), (20.0, 0.3)))[0] == "below unlock threshold"
    assert verdict(((18.0, 0.8), (20.0, 0.55)))[0] == "allowlisted"


async def test_a_late_answer_for_a_face_that_has_left_opens_nothing():
    """The resolver's answer can come after the track ended (a short visit): the face is gone, and two
    strong, fresh embeddings in that late event must not open the door."""
    import dataclasses

    from facewatchd.events import FaceEvent, TrackEnded
    from plugins.door import DoorConfig, Plugin, TrackMemory

    door = Plugin()
    door.config = DoorConfig(backend={"type": "http", "unlock_url": "http://x/u", "lock_url": "http://x/l"},
                             allow=[OBAMA])
    ended = FaceEvent("cam", "t1", 10.0, "person-o", None, 0.0, 3)
    await door.track_ended(TrackEnded(ended, 1.0, 10))
    late = FaceEvent("cam", "t1", 10.5, "person-o", OBAMA, 0.8, 3, ((9.5, 0.8), (10.0, 0.8)), source="resolver",
                     gone=True, liveness=live_frames(10.5))
    await door.face_recognised(late)
    assert door._tracks == {} and not door._last_unlock  # neither decided nor remembered
    # the same event for a face still in view would be granted
    assert door._verdict(door.config, dataclasses.replace(late, gone=False), TrackMemory())[0] == "allowlisted"


class BlocksTheLoop:
    """A third-party plugin with a bug: a blocking call in an `async def` hook holds up the whole event loop
    (here once the door is open, so the test is the relock's, not the unlock's)."""

    def __init__(self, relay: HttpReceiver) -> None:
        self.relay = relay

    @hookimpl
    async def track_ended(self, event: Any) -> None:
        import time

        await eventually(lambda: "/unlock" in self.relay.paths(), 5, what="the door to open")
        await asyncio.sleep(0.2)  # the relay's answer is in: the door is open
        time.sleep(3)


async def test_a_plugin_that_blocks_the_loop_cannot_hold_the_door_open(tmp_path, enrolled: Enrolled, relay):
    # unlocked at the 11th frame; the track ends at the 12th and the plugin blocks the loop for 3 s: the
    # loop's relock timer (unlock_s = 0.5) cannot fire, the door's own thread locks at 0.5 + 0.5 s
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    config = make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, http_backend(relay), unlock_s=0.5))
    host = PluginHost(config)
    host.load()
    host.pm.register(BlocksTheLoop(relay), name="blocker")
    daemon, _ = await run_in_loop(config, host)
    unlock = next(r for r in relay.requests if r.path == "/unlock")
    relock = next(r for r in relay.requests if r.path == "/lock" and r.at > unlock.at)
    assert relock.at - unlock.at < 1.8, relock.at - unlock.at  # not the 3 s the loop was blocked for
    assert daemon.watchdog is not None
    [(plugin, seconds)] = daemon.watchdog.blocked  # the log names who blocked it
    assert plugin == "blocker" and seconds >= 2


def test_an_unlock_command_can_carry_its_own_relock(tmp_path, enrolled: Enrolled, relay):
    """`{seconds}` in the unlock request: a relay that relocks by itself (Shelly's timer) after unlock_s, even
    if this process is killed while the door is open."""
    visit = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 12))
    backend = http_backend(relay)
    backend["unlock_url"] = relay.url("/relay/0?turn=on&timer={seconds}")
    backend["unlock_body"] = '{"on_time": {seconds}}'
    run_daemon(make_config(enrolled.state(tmp_path), visit, plugins=door(tmp_path, backend, unlock_s=7.5)))
    [unlock] = [r for r in relay.requests if r.path.startswith("/relay/0")]
    assert unlock.path == "/relay/0?turn=on&timer=8" and unlock.body == b'{"on_time": 8}'
