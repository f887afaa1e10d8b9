"""The on-prem path end to end: the real daemon with `[link] type = "mqtt"` → mosquitto → the resolver
service → the shadow service → `/delta` → the daemon names the face. With mutual TLS, through a broker
crash, and through a kill -9 of the daemon; nothing is lost and nothing is resolved twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import cv2
import numpy as np
import pytest
import structlog

from facewatchd.app.device import Daemon
from facewatchd.pipeline.cache import FaceCache
from facewatchd.plugins import PluginHost
from facewatchd.resolver.mqtt_adapter import ResolverService, ResolverServiceConfig
from facewatchd.shadow.store import ShadowStore
from facewatchd.vision.analyzer import FaceAnalyzer
from facewatchd.vision.detector import YuNetDetector
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, ROOT, cli, make_config
from tests.support.tls import TestPki

FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
CELL, COLS, ROWS = 240, 4, 3  # frames are a 4x3 grid of cells; each frame shows one face in one cell


def face_crops(photo: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every face in a photo (largest first), with a margin, scaled to 200 px."""
    image = cv2.imread(str(photo))
    faces = sorted(YuNetDetector().detect(image), key=lambda f: -f.box[2] * f.box[3])[:limit]
    crops = []
    for f in faces:
        x, y, w, h = f.box
        side = int(max(w, h) * 1.4)  # tight enough to leave the neighbours out
        cx, cy = int(x + w / 2), int(y + h / 2)
        x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
        crops.append(cv2.resize(image[y0:y0 + side, x0:x0 + side], (200, 200), interpolation=cv2.INTER_AREA))
    return crops


def write_frames(directory: Path, crops: list[np.ndarray], cells: Callable[[int], int]) -> Path:
    """One frame per crop, the face in cell `cells(i)`. Consecutive faces never share a cell, so the
    tracker (IoU) starts a new track for each, as for people walking past a door one after another."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(crops):
        frame = np.full((ROWS * CELL, COLS * CELL, 3), 96, np.uint8)
        row, col = divmod(cells(i) % (COLS * ROWS), COLS)
        frame[row * CELL + 20:row * CELL + 220, col * CELL + 20:col * CELL + 220] = crop
        cv2.imwrite(str(directory / f"{i:03d}.jpg"), frame)
    return directory


@pytest.fixture(scope="module")
def solvay_crops() -> list[np.ndarray]:
    return face_crops(FIXTURES / "solvay_conference_1927.jpg")


@pytest.fixture(scope="module")
def known_crops() -> list[np.ndarray]:
    return [face_crops(FIXTURES / "obama.jpg", 1)[0], face_crops(FIXTURES / "biden.jpg", 1)[0]]


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def outbox_ids(state: Path) -> list[str]:
    """The daemon's outbox, read as another process would (the daemon may be running or dead)."""
    db = sqlite3.connect(str(state / "outbox.db"))
    try:
        return [r[0] for r in db.execute("SELECT face_id FROM outbox")]
    except sqlite3.OperationalError:  # the daemon is still creating it
        return []
    finally:
        db.close()


def link_section(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {"type": "mqtt", "host": broker.host, "port": broker.port, **FAST, **extra}


async def enroll(service: ResolverService, name: str, photo: Path, embedding: np.ndarray | None = None) -> str:
    """Pre-register a person in the service's collection through the resolver core."""
    from facewatchd.messages import FaceQuery, new_face_id
    from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg

    image = cv2.imread(str(photo))
    face = FaceAnalyzer().largest(image)
    assert face is not None
    q = FaceQuery(new_face_id(), "", "enroll", "enroll", face_crop_jpeg(image, face.face, UplinkConfig()),
                  face.embedding if embedding is None else embedding, time.time())
    return (await service.resolver.enroll(name, [q])).person.person_id


async def settled(service: ResolverService, thing: str, timeout: float = 30) -> None:
    """Wait until the device has applied and cleared every label in its shadow. Stopping a daemon while
    its shadow update is in flight can hang it on Python 3.11 (see the report), so tests stop it after."""
    assert service.shadow is not None
    async with asyncio.timeout(timeout):
        while True:
            doc = await service.shadow.get(thing)
            if doc is not None and not doc["state"].get("desired"):
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def service(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[ResolverService]:
    config = ResolverServiceConfig(host=broker.host, port=broker.port, **FAST)
    async with ResolverService(config, tmp_path / "server") as svc:
        await svc.ready(timeout=10)
        yield svc


# -- 1. mutual TLS, both sides as a user runs them ------------------------------------------------

def _receive_until(sock: socket.socket, done: Callable[[list[str]], bool], timeout: float) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while not done(received):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"systemd notifications so far: {received}") from None
    return received


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def desired_state(shadows_db: Path, thing: str) -> dict[str, Any] | None:
    """The shadow's desired state as the shadow service stored it (None: no shadow yet)."""
    with ShadowStore(shadows_db) as store:
        doc = store.get(thing)
    return None if doc is None else doc.desired


@pytest.mark.timeout(120)
def test_round_trip_over_mutual_tls_names_an_enrolled_face(tls_broker: Mosquitto, pki: TestPki,
                                                           tmp_path: Path) -> None:
    server_cert, device_cert = pki.client("facewatchd-resolver"), pki.client("door-1")
    server_toml = tmp_path / "server.toml"
    server_toml.write_text(
        f'[device]\nstate_dir = "{tmp_path / "server"}"\n[logging]\nformat = "json"\n'
        f'[server]\nhost = "{tls_broker.host}"\nport = {tls_broker.port}\nca_file = "{pki.ca_file}"\n'
        f'cert_file = "{server_cert.cert}"\nkey_file = "{server_cert.key}"\n'
        f'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n')
    # enrolled with the `faces` command on the server's config: the service reads the same data dir
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", str(server_toml))

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "facewatchd", "resolver", "--config", str(server_toml)],
                              cwd=ROOT, env=dict(env, NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
                                                 WATCHDOG_USEC="400000"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    device_log = tmp_path / "device.log"
    device: subprocess.Popen[str] | None = None
    try:
        # READY at once, then STATUS says when both clients are connected to the TLS broker
        got = _receive_until(notify, lambda r: any("STATUS=connected" in d for d in r), 60)
        assert got[0].startswith("READY=1")
        device_toml = tmp_path / "device.toml"
        device_toml.write_text(
            f'[device]\nthing = "door-1"\nstate_dir = "{tmp_path / "device"}"\n'
            f'[logging]\nformat = "json"\n[uplink]\nanswer_timeout_s = 2\n'
            f'[[cameras]]\nid = "front"\nsource = "{FIXTURES / "obama1.jpg"}"\nloop = true\npace = "realtime"\n'
            f'fps = 2\n'
            f'[link]\ntype = "mqtt"\nhost = "{tls_broker.host}"\nport = {tls_broker.port}\n'
            f'ca_file = "{pki.ca_file}"\ncert_file = "{device_cert.cert}"\nkey_file = "{device_cert.key}"\n')
        with open(device_log, "w") as log:
            device = subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--config", str(device_toml)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        shadows = tmp_path / "server" / "resolver" / "shadows.db"
        # named by the resolver, and the label cleared from the shadow (the device applied it)
        _wait_until(lambda: '"name": "Barack Obama", "similarity"' in device_log.read_text(), 60, "the name")
        _wait_until(lambda: desired_state(shadows, "door-1") == {}, 30, "the label to be cleared")
        device.send_signal(signal.SIGTERM)
        out, _ = device.communicate(timeout=60)
        summary = json.loads(out)
        server.send_signal(signal.SIGTERM)
        server_out, server_err = server.communicate(timeout=30)
    finally:
        for proc in (device, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        notify.close()
    assert device.returncode == 0, device_log.read_text()[-3000:]
    assert summary["resolver_calls"] == 1 and summary["pending"] == 0, summary
    assert [p["name"] for p in summary["persons"].values()] == ["Barack Obama"], summary
    assert server.returncode == 0, server_err[-3000:]
    assert json.loads(server_out) == {"received": 1, "resolved": 1, "failed": 0, "skipped": {}}
    resolved = [json.loads(line) for line in server_err.splitlines() if '"face_resolved"' in line]
    assert [(r["thing"], r["name"]) for r in resolved] == [("door-1", "Barack Obama")]


# -- 2. the broker dies while faces are pending --------------------------------------------------

@pytest.mark.timeout(150)
async def test_broker_crash_loses_nothing_and_known_faces_are_named_offline(
        broker: Mosquitto, service: ResolverService, tmp_path: Path, solvay_crops: list[np.ndarray],
        known_crops: list[np.ndarray]) -> None:
    for name, photo in (("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")):
        await enroll(service, name, FIXTURES / photo)
    known = write_frames(tmp_path / "known", known_crops * 2, lambda i: (0, 5, 10, 3)[i])
    visitors = write_frames(tmp_path / "visitors", solvay_crops[:8], lambda i: 5 * i)
    state = tmp_path / "state"
    # SFace takes some of the 1927 sitters for one another at 0.363; this test is about delivery through an
    # outage, so the device keeps the eight strangers apart with a stricter cache threshold.
    sections: dict[str, Any] = {"link": link_section(broker), "uplink": {"answer_timeout_s": 2},
                                "tracker": {"max_missed": 2}, "identity": {"name_threshold": 0.5}}

    # the device learns its regulars first (named, from the enrolled collection)
    warm_config = make_config(state, **sections, cameras=[
        {"id": "door", "source": str(known), "pace": "realtime", "fps": 8, "loop": True}])
    warm = Daemon(warm_config, PluginHost(warm_config))
    task = asyncio.create_task(warm.run())
    try:
        # a second round of the loop is named from the cache: every first-round track has ended and been sent
        await eventually(lambda: warm.recognizer is not None and warm.recognizer.stats.cache_hits >= 4, 60,
                         "the regulars to be named from the cache")
        await eventually(lambda: warm.uplink is not None and warm.uplink.pending == 0, 30, "the answers")
        await settled(service, warm_config.device.thing)
    finally:
        warm.request_stop()
        first = await asyncio.wait_for(task, 60)
    assert first.pending == 0 and sorted(map(str, warm.recognizer.cache.persons().values())) == [
        "Barack Obama", "Joe Biden"]

    # then the regulars keep coming (looping) while eight strangers pass, in real time
    config = make_config(state, **sections, cameras=[
        {"id": "door", "source": str(known), "pace": "realtime", "fps": 4, "loop": True},
        {"id": "visitors", "source": str(visitors), "pace": "realtime", "fps": 3}])
    daemon = Daemon(config, PluginHost(config))
    indexed_before = service.stores.collection.indexed
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.uplink is not None and daemon.uplink.pending >= 1, 60,
                             "a first unknown face")
            await asyncio.to_thread(broker.kill)
            assert daemon.recognizer is not None and daemon.link is not None and daemon.uplink is not None
            outage_starts, hits_at_kill = len(logs), daemon.recognizer.stats.cache_hits
            await eventually(lambda: not daemon.link.online, 10, "the link to notice the crash")
            await eventually(lambda: daemon.cameras[1].stats.frames == 8, 30, "every visitor to pass the door")
            await eventually(lambda: daemon.recognizer.stats.cache_hits >= hits_at_kill + 4, 30, "regulars offline")
            offline = logs[outage_starts:]
            pending_offline = daemon.uplink.pending
            assert not daemon.link.online
            await asyncio.to_thread(broker.start)
            await eventually(lambda: daemon.uplink.pending == 0, 60, "the outbox to drain")
            await settled(service, config.device.thing)
        finally:
            daemon.request_stop()
            summary = await asyncio.wait_for(task, 60)

    # regulars were named from the cache all through the outage
    named_offline = [e for e in offline if e["event"] == "face_recognised" and e["camera"] == "door"]
    assert {(e["name"], e["source"]) for e in named_offline} == {("Barack Obama", "cache"), ("Joe Biden", "cache")}
    assert any(e["event"] == "link_offline" for e in offline)
    assert pending_offline >= 2  # faces waited in the outbox
    # every visitor sent once, resolved exactly once, answered: 0 lost, 0 twice
    sent = [e["face_id"] for e in logs if e["event"] == "face_query_sent"]
    resolved = Counter(e["face_id"] for e in logs if e["event"] == "face_resolved")
    assert len(sent) == daemon.recognizer.stats.resolver_calls == len(set(sent)) >= 6
    assert set(resolved) == set(sent) and set(resolved.values()) == {1}
    # a face is indexed only as a new person, so index calls = new persons: none indexed twice
    new_persons = sum(1 for e in logs if e["event"] == "face_resolved" and e["new_person"])
    assert service.stores.collection.indexed - indexed_before == new_persons >= 1
    assert summary.pending == 0 and outbox_ids(state) == []
    assert all(e.person_id for e in daemon.recognizer.cache.entries())  # no face left waiting for its name


# -- 3. the daemon is killed with requests in its outbox ------------------------------------------

@pytest.mark.timeout(150)
async def test_kill_9_with_a_full_outbox_then_restart_drains_it(broker: Mosquitto, tmp_path: Path,
                                                               solvay_crops: list[np.ndarray]) -> None:
    visitors = write_frames(tmp_path / "visitors", solvay_crops[8:14], lambda i: 5 * i)
    state = tmp_path / "state"
    config = tmp_path / "device.toml"
    config.write_text(
        f'[device]\nthing = "door-2"\nstate_dir = "{state}"\n'
        f'[logging]\nformat = "json"\n[uplink]\nanswer_timeout_s = 2\n[tracker]\nmax_missed = 2\n'
        f'[[cameras]]\nid = "hall"\nsource = "{visitors}"\nloop = true\npace = "realtime"\nfps = 4\n'
        f'[link]\ntype = "mqtt"\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n')

    async def start_daemon(log_name: str) -> asyncio.subprocess.Process:
        with open(tmp_path / log_name, "w") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "facewatchd", "run", "--config", str(config), cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=asyncio.subprocess.PIPE, stderr=log)

    # the broker is up but no resolver listens: every request stays in the outbox
    first = await start_daemon("first.log")
    try:
        await eventually(lambda: (state / "outbox.db").exists() and len(outbox_ids(state)) == 6, 60,
                         "six unknown faces in the outbox")
    finally:
        first.kill()  # SIGKILL: no drain, no flush, no goodbye
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    waiting = set(outbox_ids(state))
    assert len(waiting) == 6

    server = ResolverServiceConfig(host=broker.host, port=broker.port, **FAST)
    with structlog.testing.capture_logs() as logs:
        async with ResolverService(server, tmp_path / "server") as service:
            await service.ready(timeout=10)
            second = await start_daemon("second.log")
            try:
                await eventually(lambda: not outbox_ids(state), 60, "the outbox to drain")
                await settled(service, "door-2")
            finally:
                second.send_signal(signal.SIGTERM)
                out, _ = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()[-3000:]
    summary = json.loads(out)
    assert summary["pending"] == 0 and summary["resolver_calls"] == 0  # the restart sent nothing new
    resolved = Counter(e["face_id"] for e in logs if e["event"] == "face_resolved")
    assert set(resolved) == waiting and set(resolved.values()) == {1}
    new_persons = sum(1 for e in logs if e["event"] == "face_resolved" and e["new_person"])
    assert service.stores.collection.indexed == new_persons >= 1  # none indexed twice
    cache = FaceCache(state / "cache.db")  # every face that waited is named on the device now
    try:
        assert {e.face_id for e in cache.entries() if e.face_id in waiting and e.person_id} == waiting
    finally:
        cache.close()


# -- 4. the operator's corrections reach a running device ------------------------------------------

async def test_merge_move_and_reject_reach_the_running_device(
        broker: Mosquitto, service: ResolverService, tmp_path: Path, known_crops: list[np.ndarray]) -> None:
    obama_id = await enroll(service, "Barack Obama", FIXTURES / "obama.jpg")
    biden_id = await enroll(service, "Joe Biden", FIXTURES / "biden.jpg")
    known = write_frames(tmp_path / "known", known_crops, lambda i: (0, 5)[i])
    config = make_config(tmp_path / "state", link=link_section(broker), cameras=[
        {"id": "door", "source": str(known), "pace": "realtime", "fps": 8, "loop": True}])
    daemon = Daemon(config, PluginHost(config))
    task = asyncio.create_task(daemon.run())
    thing = config.device.thing

    def cached() -> dict[str, Any]:
        assert daemon.recognizer is not None
        return daemon.recognizer.cache.persons()

    try:
        await eventually(lambda: daemon.recognizer is not None and cached() == {
            obama_id: "Barack Obama", biden_id: "Joe Biden"}, 60, "both to be named")
        await settled(service, thing)
        biden_face = next(e.face_id for e in daemon.recognizer.cache.entries() if e.person_id == biden_id)

        await service.resolver.merge(obama_id, biden_id)  # (a wrong merge, on purpose)
        await eventually(lambda: cached() == {obama_id: "Barack Obama"}, 30, "the merge on the device")
        await service.resolver.move(biden_face, obama_id)  # nothing to do: already Obama's after the merge
        # A new person to move his face to. Not from his photo: after the merge that is named as Obama, and
        # an enrolment leaves out a photo of somebody else; a template far from everyone makes the person.
        far = np.zeros(128, np.float32)
        far[0] = 1.0
        biden_again = await enroll(service, "Joe Biden", FIXTURES / "biden.jpg", far)
        await service.resolver.move(biden_face, biden_again)  # the operator's correction
        await eventually(lambda: cached().get(biden_again) == "Joe Biden", 30, "the moved face on the device")
        await service.resolver.reject(biden_face)
        await eventually(lambda: all(biden_face not in (e.face_id, e.origin)
                                     for e in daemon.recognizer.cache.entries()), 30, "the rejected face to go")
        await settled(service, thing)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 60)
    person = await service.stores.names.get(obama_id)
    assert person is not None and biden_face not in person.faces
