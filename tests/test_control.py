"""`facewatchd faces …` while a daemon or a resolver service runs: the command acts through the running
process (its control socket), so a label or a forget takes effect there at once, not at the next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from facewatchd.plugins import PluginHost
from tests.plugins.support import eventually, frames_dir, run_in_loop
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, ROOT, Lines, cli, make_config
from tests.test_onprem import face_crops

pytestmark = pytest.mark.timeout(120)


async def test_label_and_forget_reach_a_running_embedded_daemon_within_a_second(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[device]\nstate_dir = "{state}"\n')
    await asyncio.to_thread(cli, "faces", "enroll", "Obama", str(FIXTURES / "obama.jpg"), "--config", str(cfg))
    frames = frames_dir(tmp_path / "door", (FIXTURES / "obama2.jpg", 1))
    config = make_config(state, cameras=[{"id": "door", "source": str(frames), "loop": True, "fps": 10,
                                          "pace": "realtime"}])
    host = PluginHost(config)

    async def operate(daemon) -> None:  # type: ignore[no-untyped-def]
        await eventually(lambda: daemon.recognizer is not None and daemon.recognizer.cache.persons(), 30,
                         what="Obama named")
        [(obama, name)] = daemon.recognizer.cache.persons().items()
        assert name == "Obama"
        assert stat.S_IMODE((state / "control.sock").stat().st_mode) == 0o600
        out = await asyncio.to_thread(cli, "faces", "label", obama, "Barack Obama", "--config", str(cfg))
        assert "is now 'Barack Obama'" in out.stdout
        await eventually(lambda: daemon.recognizer.cache.persons() == {obama: "Barack Obama"}, 1.0,
                         what="the new name in the running daemon")
        [track] = daemon.recognizer._live.values()
        assert track.name == "Barack Obama"  # the live track too, not only the next ones
        out = await asyncio.to_thread(cli, "faces", "forget", obama, "--config", str(cfg))
        assert "forgot" in out.stdout
        await eventually(lambda: obama not in daemon.recognizer.cache.persons() and track.person_id is None, 1.0,
                         what="the forget in the running daemon")

    _, summary = await run_in_loop(config, host, until=operate)
    assert all(p["name"] != "Barack Obama" for pid, p in summary.persons.items() if pid in summary.persons)
    listed = json.loads((await asyncio.to_thread(cli, "faces", "list", "--json", "--config", str(cfg))).stdout)
    assert listed == []  # and with no daemon running the command works on the stores as before


def test_label_enroll_and_forget_go_through_a_running_resolver_service(broker: Mosquitto, tmp_path: Path) -> None:
    server = tmp_path / "server.toml"
    server.write_text(f'[device]\nstate_dir = "{tmp_path / "elsewhere"}"\n[logging]\nformat = "json"\n'
                      f'[server]\nhost = "{broker.host}"\nport = {broker.port}\ndata_dir = "{tmp_path / "data"}"\n'
                      'reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "facewatchd", "resolver", "--config", str(server)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        Lines(proc.stderr).until(lambda seen: '"control_socket_listening"' in seen
                                 and "shadow service connected" in seen, timeout=60)
        asyncio.run(_device_round_trips(broker, server, tmp_path))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def _device_round_trips(broker: Mosquitto, server: Path, tmp_path: Path) -> None:
    from facewatchd.messages import FaceQuery, new_face_id, uplink_topic
    from facewatchd.pipeline.uplink import UplinkConfig, encode_jpeg
    from facewatchd.vision.analyzer import FaceAnalyzer

    analyzer = FaceAnalyzer()

    def query(photo: str) -> FaceQuery:
        crop = face_crops(FIXTURES / photo, 1)[0]
        face = analyzer.largest(crop)
        assert face is not None
        return FaceQuery(new_face_id(), "door-1", "front", "t", encode_jpeg(crop, UplinkConfig()), face.embedding,
                         time.time())

    async with aiomqtt.Client(broker.host, broker.port, identifier="door-1") as device:
        await device.subscribe("$aws/things/door-1/shadow/update/delta", qos=1)
        answers: dict[str, dict] = {}
        persons: dict[str, dict] = {}

        async def read() -> None:
            async for message in device.messages:
                state = json.loads(message.payload)["state"]  # type: ignore[arg-type]
                answers.update(state.get("faces", {}))
                persons.update(state.get("persons", {}))

        reader = asyncio.create_task(read())
        # enrolled through the running service: its in-memory collection knows him at once
        await asyncio.to_thread(cli, "faces", "enroll", "Obama", str(FIXTURES / "obama.jpg"), "--config", str(server))
        first = query("obama1.jpg")
        await device.publish(uplink_topic("door-1"), first.to_json(), qos=1)
        await eventually(lambda: first.face_id in answers, 20, what="the first answer")
        obama = answers[first.face_id]["person_id"]
        assert answers[first.face_id]["name"] == "Obama"
        await asyncio.to_thread(cli, "faces", "label", obama, "Barack Obama", "--config", str(server))
        await eventually(lambda: persons.get(obama, {}).get("name") == "Barack Obama", 5, what="the label delta")
        out = await asyncio.to_thread(cli, "faces", "forget", obama, "--config", str(server))
        assert "forgot" in out.stdout
        await eventually(lambda: persons.get(obama, {}).get("forget") is True, 5, what="the forget delta")
        # the next sighting is somebody new: the forgotten person is not brought back from a stale collection
        second = query("obama2.jpg")
        await device.publish(uplink_topic("door-1"), second.to_json(), qos=1)
        await eventually(lambda: second.face_id in answers, 20, what="the second answer")
        assert answers[second.face_id]["person_id"] != obama
        reader.cancel()


async def test_the_socket_is_private_without_touching_the_umask_and_deep_json_is_a_400(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    import aiohttp

    from facewatchd.control import ControlServer
    from facewatchd.resolver.embedded import EmbeddedResolver
    from facewatchd.resolver.local import LocalResolverConfig

    umask_calls: list[int] = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: umask_calls.append(mask) or real_umask(mask))
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    path = tmp_path / "state" / "control.sock"
    path.parent.mkdir(mode=0o700)
    try:
        async with ControlServer(backend.resolver, path):
            # a process-wide umask set while binding would give another thread's new files the same mode
            assert umask_calls == []
            assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session:
                deep = b"[" * 100_000 + b"]" * 100_000
                async with session.post("http://control/persons/p/label", data=deep,
                                        headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400 and "nested too deeply" in (await r.json())["error"]
                async with session.get("http://control/persons") as r:
                    assert r.status == 200  # and it keeps serving
    finally:
        backend.close()


async def test_a_name_taken_and_an_enrolment_report_cross_the_socket(tmp_path: Path) -> None:
    """The daemon's NameTaken reaches the CLI as the same error (its holder, the merge to make), and an
    enrolment's report (the faces left out as another person's) comes back whole."""
    from facewatchd.control import ControlClient, ControlServer
    from facewatchd.resolver.embedded import EmbeddedResolver
    from facewatchd.resolver.local import LocalResolverConfig
    from facewatchd.resolver.ports import NameTaken
    from facewatchd.vision.analyzer import FaceAnalyzer
    from tests.resolver.test_names import photo

    analyzer = FaceAnalyzer()
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    path = tmp_path / "state" / "control.sock"
    try:
        async with ControlServer(backend.resolver, path):
            client = await ControlClient.connect(path)
            assert client is not None
            try:
                alice = await client.enroll("Alice", [photo(analyzer, "obama.jpg")])
                biden = photo(analyzer, "biden.jpg")
                joe = await client.enroll("Joe", [biden, photo(analyzer, "obama1.jpg")])
                assert alice.person is not None and joe.person is not None
                assert joe.added == [biden.face_id] and joe.templates_limit == 5
                [(_, match)] = joe.matched.items()
                assert match.person_id == alice.person.person_id  # Obama's photo is Alice's, not Joe's
                with pytest.raises(NameTaken) as taken:
                    await client.label(joe.person.person_id, "ALICE")
                assert taken.value.holder == alice.person.person_id
                assert f"faces merge {alice.person.person_id} {joe.person.person_id}" in str(taken.value)
            finally:
                await client.close()
    finally:
        backend.close()
