"""Footfall analytics: visits with a known truth through the real plugin host, the database's privacy
(hashes only; nothing at all when anonymous), `facewatchd stats` as a user runs it (table, chart, bad
input), Home Assistant sensors on a real mosquitto, and the real daemon on the sample clip."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from facewatchd.app.config import load_config
from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.plugins import PluginHost
from plugins.analytics.store import AnalyticsStore, hour_of
from tests.plugins.support import MqttRecorder, eventually, run_in_loop
from tests.support.broker import Mosquitto
from tests.support.daemon import SAMPLE_CLIP, cli, make_config

pytestmark = pytest.mark.timeout(180)

T10 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc).timestamp()
ALICE, BOB, CAROL = "person-a1a1a1a1a1", "person-b2b2b2b2b2", "person-c3c3c3c3c3"

# (camera, arrived at (s after 10:00 UTC), dwell s, person id): 3 people, 7 visits across 2 hours, plus
# one flicker track. Alice comes at 10:05 and 10:30 and returns at 11:10; Bob once at the till; Carol at
# the door at 11:20, then the till at 11:25 (returning there: first seen at the door); one visit ended
# before the resolver answered (no person id).
VISITS = [
    ("door", 5 * 60, 20.0, ALICE),
    ("door", 30 * 60, 40.0, ALICE),
    ("till", 40 * 60, 8.0, BOB),
    ("door", 45 * 60, 0.4, BOB),  # flicker: under min_dwell_s, not a visit
    ("door", 50 * 60, 3.0, None),
    ("door", 70 * 60, 100.0, ALICE),
    ("door", 80 * 60, 400.0, CAROL),
    ("till", 85 * 60, 70.0, CAROL),  # ends before her door visit does: she was still first seen at the door
]

TABLE = """\
hour              camera       visits identified unique  new returning mean dwell
2026-11-28 10:00  door              3          2      1    1         0       21.0
2026-11-28 10:00  till              1          1      1    1         0        8.0
2026-11-28 11:00  door              2          2      2    1         1      250.0
2026-11-28 11:00  till              1          1      1    0         1       70.0
total             *                 7          6      3    3         0       91.6
dwell: 0s-5s 1  5s-15s 1  15s-30s 1  30s-1m 1  1m-5m 2  5m-15m 1  15m+ 0"""


def write_config(tmp_path: Path, **analytics: object) -> Path:
    """Two live cameras (never opened here: hooks are fired directly), so visit times are the events' own."""
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in analytics.items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "facewatchd.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
                    '[[cameras]]\nid = "door"\nsource = "rtsp://127.0.0.1:9/door"\n'
                    '[[cameras]]\nid = "till"\nsource = "rtsp://127.0.0.1:9/till"\n'
                    f"[plugins.analytics]\n{keys}")
    return path


def ended(camera: str, arrived: float, dwell_s: float, person_id: str | None, n: int = 0) -> TrackEnded:
    face = FaceEvent(camera=camera, track_id=f"t{n}", ts=arrived + dwell_s, person_id=person_id,
                     name="Alice" if person_id == ALICE else None)
    return TrackEnded(face, dwell_s, frames=max(1, int(dwell_s * 10)))


async def feed(config_file: Path, visits: list[tuple[str, float, float, str | None]], base: float = T10) -> None:
    """The visits, as the daemon fires them, through the real plugin host (start, hooks, drain, stop)."""
    host = PluginHost(load_config(config_file))
    host.load()
    await host.start()
    for n, (camera, at, dwell, person) in enumerate(sorted(visits, key=lambda v: v[1] + v[2])):  # as tracks end
        host.fire("track_ended", event=ended(camera, base + at, dwell, person, n))
    await host.drain()
    await host.stop()
    assert host.failures == {}


def stats(config_file: Path, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return cli("stats", "--config", str(config_file), *args, check=check)


def db_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state.glob("analytics.db*"))


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the table shows local hours: make them the truth's


async def test_counts_match_a_known_truth(tmp_path):
    config_file = write_config(tmp_path, min_dwell_s=1.0)
    await feed(config_file, VISITS)

    out = stats(config_file).stdout
    assert TABLE in out, out
    assert "(UTC+00:00)" in out.splitlines()[0]

    since = stats(config_file, "--since", "2026-11-28T11:00").stdout  # Alice is returning, Carol new
    assert "10:00" not in since
    assert "total             *                 3          3      2    1         1      190.0" in since, since
    till = stats(config_file, "--camera", "till").stdout  # Carol was first seen at the door
    assert "total             till              2          2      2    1         1       39.0" in till, till
    assert "no visits since" in stats(config_file, "--since", "2027-01-01").stdout


async def test_the_database_holds_salted_hashes_never_ids_or_names(tmp_path):
    config_file = write_config(tmp_path)
    await feed(config_file, VISITS)
    state = tmp_path / "state"
    raw = db_bytes(state)
    for secret in (ALICE, BOB, CAROL, "Alice"):
        assert secret.encode() not in raw
    with sqlite3.connect(state / "analytics.db") as db:
        persons = [r[0] for r in db.execute("SELECT person FROM persons")]
        salt = db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()[0]
    assert len(persons) == 3 and all(len(p) == 64 for p in persons) and len(salt) == 64
    # the salt makes the hashes this device's own: the same id hashes differently in another database
    other = write_config(tmp_path / "other")
    await feed(other, VISITS[:1])
    with sqlite3.connect(tmp_path / "other" / "state" / "analytics.db") as db:
        assert db.execute("SELECT person FROM persons").fetchone()[0] not in persons


async def test_a_forgotten_person_leaves_no_history(tmp_path):
    config_file = write_config(tmp_path)
    host = PluginHost(load_config(config_file))
    host.load()
    await host.start()
    for n, (camera, at, dwell, person) in enumerate(VISITS):
        host.fire("track_ended", event=ended(camera, T10 + at, dwell, person, n))
    host.fire("person_labelled", person_id=BOB, name=None, previous=None)  # forgotten (operator, retention)
    await host.drain()
    await host.stop()
    with sqlite3.connect(tmp_path / "state" / "analytics.db") as db:
        persons = db.execute("SELECT count(*) FROM persons").fetchone()[0]
        visits = db.execute("SELECT sum(visits) FROM hourly").fetchone()[0]
    assert persons == 2  # Alice and Carol keep their pseudonyms; Bob's is gone with his hours
    assert visits == sum(1 for v in VISITS if v[2] >= 1.0)  # the counts stay: they are not anyone's


async def test_anonymous_keeps_no_identity_and_says_so(tmp_path):
    config_file = write_config(tmp_path)
    await feed(config_file, VISITS[:3])  # an earlier run that counted persons
    state = tmp_path / "state"
    with sqlite3.connect(state / "analytics.db") as db:
        kept = [r[0] for r in db.execute("SELECT person FROM persons UNION SELECT value FROM meta WHERE key = 'salt'")]
    assert len(kept) == 3
    config_file = write_config(tmp_path, anonymous=True)
    await feed(config_file, VISITS[3:])
    raw = db_bytes(state)
    assert not [k for k in kept if k.encode() in raw]  # erased from the file, not just from the tables
    with sqlite3.connect(state / "analytics.db") as db:
        assert db.execute("SELECT COUNT(*) FROM persons").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM presence").fetchone()[0] == 0
        assert db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone() is None
        assert db.execute("SELECT SUM(identified) FROM hourly WHERE hour > ?", (T10,)).fetchone()[0] == 0
    out = stats(config_file).stdout
    assert "total             *                 7          3      -    -         -       91.6" in out, out
    assert "not counted (anonymous = true" in out


async def test_stats_draws_a_png_and_refuses_bad_input_clearly(tmp_path):
    config_file = write_config(tmp_path, min_dwell_s=1.0)
    missing = stats(config_file, check=False)
    assert missing.returncode == 1 and "no analytics database yet" in missing.stderr
    assert "Traceback" not in missing.stderr

    await feed(config_file, VISITS)
    chart = tmp_path / "footfall.png"
    out = stats(config_file, "--plot", str(chart)).stdout
    assert f"chart: {chart}" in out
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 400

    for args, code, says in ((["--since", "yesterday"], 2, "argument --since: 'yesterday': expected an ISO date"),
                             (["--since", "24x"], 2, "or a span back from now"),
                             (["--plot", str(tmp_path / "no" / "dir.png")], 1, "No such file or directory")):
        proc = stats(config_file, *args, check=False)
        assert proc.returncode == code and says in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    damaged = write_config(tmp_path / "damaged", db=str(tmp_path / "damaged.db"))
    (tmp_path / "damaged.db").write_bytes(b"not a database, whatever its name says" * 100)
    proc = stats(damaged, check=False)
    assert proc.returncode == 78 and "damaged.db: the analytics database is damaged" in proc.stderr, proc.stderr
    bad = write_config(tmp_path / "bad", min_dwell_s=-1)
    proc = stats(bad, check=False)
    assert proc.returncode == 2 and "plugins.analytics.min_dwell_s: must be >= 0" in proc.stderr, proc.stderr


def with_mqtt(config_file: Path, broker: Mosquitto) -> PluginHost:
    with config_file.open("a") as f:
        f.write(f'[plugins.analytics.mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nreconnect_min_s = 0.1\n')
    host = PluginHost(load_config(config_file))
    host.load()
    return host


async def test_home_assistant_sensors_per_camera(tmp_path, broker: Mosquitto):
    host = with_mqtt(write_config(tmp_path, min_dwell_s=0.5), broker)
    arrived = max(time.time() - 2.0, hour_of(time.time()))  # within this hour, whenever the test runs
    state_topic = "facewatchd/facewatchd-demo/analytics/door"
    unique_config = "homeassistant/sensor/facewatchd_facewatchd-demo_footfall/door_unique_today/config"
    availability = "facewatchd/facewatchd-demo/analytics/availability"
    async with MqttRecorder(broker, "homeassistant/#", "facewatchd/#") as mqtt:
        def door_state() -> dict[str, object]:
            return json.loads(mqtt.last(state_topic) or b"{}")

        await host.start()
        await eventually(lambda: door_state().get("visits_today") == 0, what="the states announced on connect")
        for n, person in enumerate((ALICE, BOB, ALICE, None)):  # 4 visits, 2 persons, just now
            host.fire("track_ended", event=ended("door", arrived, 1.0, person, n))
        # published after the visits, not at the next interval (60 s)
        await eventually(lambda: door_state().get("visits_today") == 4, what="the door's state after 4 visits")
        await host.stop()
        await eventually(lambda: mqtt.last(availability) == b"offline", what="offline at stop")
        config, named_state = json.loads(mqtt.last(unique_config) or b"{}"), door_state()

        # anonymous from now on: HA loses the identity sensors, and the state has no unique count
        anonymous = with_mqtt(write_config(tmp_path, min_dwell_s=0.5, anonymous=True), broker)
        await anonymous.start()
        await eventually(lambda: mqtt.last(unique_config) == b"" and door_state().get("unique_today", 0) is None,
                         what="identity sensors removed")
        await anonymous.stop()
        anonymous_state = door_state()
    assert anonymous_state["visits_today"] == 4 and anonymous_state["new_today"] is None
    counts = {k: v for k, v in named_state.items() if not k.endswith("_started")}
    assert counts == {"visits_this_hour": 4, "visits_today": 4, "unique_today": 2, "new_today": 2,
                      "mean_dwell_today_s": 1.0}
    hour_started = datetime.fromisoformat(str(named_state["hour_started"])).timestamp()  # HA's last_reset
    assert hour_started % 3600 == 0 and 0 <= time.time() - hour_started < 3600 + 60
    assert json.loads(mqtt.last("facewatchd/facewatchd-demo/analytics/till") or b"{}")["visits_today"] == 0
    assert config["state_topic"] == state_topic and config["value_template"] == "{{ value_json.unique_today }}"
    assert config["availability"] == [{"topic": availability}, {"topic": "facewatchd/facewatchd-demo/availability"}]
    assert config["availability_mode"] == "all"


class TrackLog:
    def __init__(self) -> None:
        self.tracks: list[TrackEnded] = []

    @hookimpl
    def track_ended(self, event: TrackEnded) -> None:
        self.tracks.append(event)


@pytest.mark.slow
async def test_the_daemon_on_the_sample_clip_twice(tmp_path):
    """Every ended track of at least min_dwell_s is a visit; the summary's tracks are every track started.
    The second run (a restart) names everyone from the cache: the same persons, not new ones."""
    config = make_config(tmp_path / "state", SAMPLE_CLIP, plugins={"analytics": {}})
    runs = []
    for _ in range(2):
        host = PluginHost(config)
        host.load()
        log = TrackLog()
        host.register("tracklog", log, "test")
        _, summary = await run_in_loop(config, host, timeout=150)
        assert len(log.tracks) == summary.tracks >= 10  # every track started also ended (the file's end ends them)
        runs.append(log.tracks)
    # the restart named from the cache every track worth naming; the others (the quality gate's) stay no one
    assert sum(1 for t in runs[1] if not t.face.person_id) == summary.tracks_not_worth_naming
    visits = [t for tracks in runs for t in tracks if t.dwell_s >= 1.0]  # the default min_dwell_s
    assert len(visits) < sum(map(len, runs))  # the clip has flicker tracks, and they do not count
    store = AnalyticsStore(tmp_path / "state" / "analytics.db", None, read_only=True)
    try:
        total = store.total()
        histogram = store.dwell_histogram()
    finally:
        store.close()
    persons = {t.face.person_id for t in visits if t.face.person_id}
    assert total.visits == len(visits) and sum(histogram.values()) == len(visits)
    assert total.identified == sum(1 for t in visits if t.face.person_id)
    # a person hashes the same after a restart (the salt is kept), so the second run adds visits, not persons
    assert total.unique == total.new == len(persons) >= 2
    assert total.dwell_s == pytest.approx(sum(t.dwell_s for t in visits))
