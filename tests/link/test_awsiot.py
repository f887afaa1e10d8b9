"""AwsIotLink (awscrt MQTT5 + IotShadowClientV2, mutual TLS) against a real mosquitto, with our ShadowService
answering the shadow requests on the same broker: uplink, deltas, reports, outages, certificates, limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiomqtt
import numpy as np
import pytest

from facewatchd.app.config import parse_config
from facewatchd.config import ConfigError
from facewatchd.link import create_link
from facewatchd.link.awsiot import AwsIotLink, AwsIotLinkConfig, LinkAuthError
from facewatchd.link.base import Link, LinkDown
from facewatchd.messages import FaceQuery, MessageError, new_face_id, uplink_topic
from facewatchd.shadow.service import ShadowService
from facewatchd.shadow.store import ShadowStore
from tests.support.broker import Mosquitto, free_port
from tests.support.daemon import FIXTURES, ROOT, Lines, cli
from tests.support.tls import TestPki

pytestmark = pytest.mark.timeout(60)
THING = "cam-1"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "operation_timeout_s": 2}


def config(broker: Mosquitto, pki: TestPki, **extra: Any) -> AwsIotLinkConfig:
    cert = pki.client(THING)
    settings: dict[str, Any] = {"endpoint": broker.host, "port": broker.port, "ca_file": pki.ca_file,
                                "cert_file": cert.cert, "key_file": cert.key, **FAST}
    return AwsIotLinkConfig(type="awsiot", **{**settings, **extra})


def face_query(crop_bytes: int = 2000) -> FaceQuery:
    crop = b"\xff\xd8" + bytes(range(256)) * (crop_bytes // 256)
    return FaceQuery(new_face_id(), THING, "front", "t-7", crop, np.linspace(-1, 1, 128, dtype=np.float32), ts=12.5)


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def raw_client(broker: Mosquitto, pki: TestPki, name: str) -> aiomqtt.Client:
    cert = pki.client(name)
    return aiomqtt.Client(broker.host, broker.port, identifier=name, tls_params=aiomqtt.TLSParameters(
        ca_certs=str(pki.ca_file), certfile=str(cert.cert), keyfile=str(cert.key)))


async def retained(broker: Mosquitto, pki: TestPki, topic: str) -> bytes:
    """The retained message on `topic`, read by a fresh subscriber."""
    async with raw_client(broker, pki, f"probe-{time.monotonic_ns()}") as probe:
        await probe.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in probe.messages:
                return bytes(message.payload)
    raise AssertionError("unreachable")


@pytest.fixture
async def service(tls_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> AsyncIterator[ShadowService]:
    cert = pki.client("shadow-service")
    with ShadowStore(tmp_path / "shadows.db") as store:
        async with ShadowService(store, tls_broker.host, tls_broker.port, ca_file=pki.ca_file, cert_file=cert.cert,
                                 key_file=cert.key, reconnect_min_s=0.1, reconnect_max_s=0.5) as svc:
            await svc.ready(timeout=10)
            yield svc


@pytest.fixture
async def link(tls_broker: Mosquitto, pki: TestPki) -> AsyncIterator[AwsIotLink]:
    async with AwsIotLink(THING, config(tls_broker, pki)) as lk:
        await lk.wait_online(timeout=10)
        yield lk


async def test_send_query_arrives_on_the_uplink_topic(tls_broker: Mosquitto, pki: TestPki, link: AwsIotLink) -> None:
    assert isinstance(link, Link) and link.online
    query = face_query()
    async with raw_client(tls_broker, pki, "resolver") as resolver:
        await resolver.subscribe(uplink_topic(THING), qos=1)
        await link.send_query(query)
        async with asyncio.timeout(5):
            message = await anext(aiter(resolver.messages))
    assert message.qos == 1
    got = FaceQuery.from_json(message.payload, thing=THING)
    assert (got.face_id, got.camera, got.track, got.crop_jpeg, got.ts) == (
        query.face_id, "front", "t-7", query.crop_jpeg, 12.5)
    assert np.array_equal(got.embedding, query.embedding)
    assert await retained(tls_broker, pki, f"facewatchd/{THING}/availability") == b"online"
    assert f"as {THING} (p5, c1, k30, u'{THING}')" in tls_broker.log()  # MQTT 5, clean start, keep-alive 30 s


@pytest.mark.parametrize("shadow_name", [None, "facewatchd"])
async def test_service_delta_reaches_deltas_and_update_shadow_reports(
        tls_broker: Mosquitto, pki: TestPki, service: ShadowService, shadow_name: str | None) -> None:
    async with AwsIotLink(THING, config(tls_broker, pki, shadow_name=shadow_name)) as link:
        await link.wait_online(timeout=10)
        deltas = link.deltas()
        await service.update(THING, {"state": {"desired": {"faces": {"f1": {"name": "Ann"}}}}}, shadow_name)
        assert await asyncio.wait_for(anext(deltas), 10) == {"faces": {"f1": {"name": "Ann"}}}

        await link.update_shadow({"reported": {"faces": {"f1": {"name": "Ann"}}},
                                  "desired": {"faces": {"f1": None}}})
        doc = await service.get(THING, shadow_name)  # update_shadow returns once the service accepted it
        assert doc is not None
        assert doc["state"]["reported"] == {"faces": {"f1": {"name": "Ann"}}}
        assert "desired" not in doc["state"] and doc["version"] == 2
        other = None if shadow_name else "facewatchd"
        assert await service.get(THING, other) is None  # the other shadow was not touched


async def test_a_delta_pending_before_connecting_is_delivered_by_get(
        tls_broker: Mosquitto, pki: TestPki, service: ShadowService) -> None:
    await service.update(THING, {"state": {"reported": {"faces": {}}, "desired": {"faces": {"f0": {"name": "Zoe"}}}}})
    async with AwsIotLink(THING, config(tls_broker, pki)) as link:
        assert await asyncio.wait_for(anext(link.deltas()), 10) == {"faces": {"f0": {"name": "Zoe"}}}


async def test_outage_reconnects_and_recovers_the_missed_delta_with_get(
        tls_broker: Mosquitto, pki: TestPki, service: ShadowService, link: AwsIotLink) -> None:
    deltas = link.deltas()
    await asyncio.to_thread(tls_broker.stop)
    await eventually(lambda: not link.online, what="link offline")
    with pytest.raises(LinkDown, match="not connected"):
        await link.send_query(face_query())
    with pytest.raises(LinkDown):
        await link.update_shadow({"reported": {"x": 1}})

    # the resolver labels a face while the device is cut off: stored, not delivered
    await service.update(THING, {"state": {"desired": {"faces": {"f2": {"name": "Bob"}}}}})

    await asyncio.to_thread(tls_broker.start)
    await link.wait_online(timeout=15)
    state = await asyncio.wait_for(anext(deltas), 15)
    assert state == {"faces": {"f2": {"name": "Bob"}}}  # from get/accepted's state.delta
    assert await retained(tls_broker, pki, f"facewatchd/{THING}/availability") == b"online"
    await link.send_query(face_query())  # usable again

    # and the delta stream itself was subscribed again
    await service.ready(timeout=10)
    await service.update(THING, {"state": {"desired": {"faces": {"f3": {"name": "Cy"}}}}})
    assert await asyncio.wait_for(anext(deltas), 10) == {"faces": {"f2": {"name": "Bob"}, "f3": {"name": "Cy"}}}


async def test_clean_close_leaves_offline_retained(tls_broker: Mosquitto, pki: TestPki) -> None:
    async with AwsIotLink(THING, config(tls_broker, pki)) as lk:
        await lk.wait_online(timeout=10)
        deltas = lk.deltas()
    assert not lk.online
    assert await retained(tls_broker, pki, f"facewatchd/{THING}/availability") == b"offline"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(deltas), 5)  # the delta stream ends with the link


_DEVICE = """
import asyncio, sys
from facewatchd.link.awsiot import AwsIotLink, AwsIotLinkConfig

async def main() -> None:
    host, port, ca, cert, key, thing = sys.argv[1:]
    cfg = AwsIotLinkConfig(endpoint=host, port=int(port), ca_file=ca, cert_file=cert, key_file=key)
    async with AwsIotLink(thing, cfg) as link:
        await link.wait_online(timeout=10)
        print("online", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_will_says_offline_when_the_device_dies(tls_broker: Mosquitto, pki: TestPki) -> None:
    """A device process killed with SIGKILL sends no DISCONNECT: the broker publishes the retained will."""
    cert = pki.client(THING)
    device = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DEVICE, tls_broker.host, str(tls_broker.port), str(pki.ca_file), str(cert.cert),
        str(cert.key), THING, stdout=asyncio.subprocess.PIPE)
    try:
        assert device.stdout is not None
        async with asyncio.timeout(20):
            while (line := await device.stdout.readline()) != b"online\n":
                assert line, "the device process exited"
            while await retained(tls_broker, pki, f"facewatchd/{THING}/availability") != b"online":
                await asyncio.sleep(0.05)  # the link announces itself just after connecting
    finally:
        device.kill()
        await device.wait()
    for _ in range(100):  # the broker notices the closed socket at once
        if await retained(tls_broker, pki, f"facewatchd/{THING}/availability") == b"offline":
            break
        await asyncio.sleep(0.05)
    assert await retained(tls_broker, pki, f"facewatchd/{THING}/availability") == b"offline"


async def test_malformed_deltas_are_skipped(tls_broker: Mosquitto, pki: TestPki, link: AwsIotLink) -> None:
    topic = f"$aws/things/{THING}/shadow/update/delta"
    deltas = link.deltas()
    async with raw_client(tls_broker, pki, "rogue") as rogue:
        # no shadow service here: ping until the SDK's delta stream is subscribed and passes one through
        async with asyncio.timeout(10):
            while True:
                await rogue.publish(topic, b'{"state": {"ping": 1}, "version": 1}', qos=1)
                with contextlib.suppress(asyncio.TimeoutError):
                    assert await asyncio.wait_for(anext(deltas), 0.2) == {"ping": 1}
                    break
        for payload in (b"{oops", b"\xff\xfe", b"[]", b'{"state": 7}', b'{"version": 3}',
                        b'{"state": {"ok": 1}, "version": 9}'):
            await rogue.publish(topic, payload, qos=1)
        while (state := await asyncio.wait_for(anext(deltas), 10)) == {"ping": 1}:
            pass  # pings that were still in flight
        assert state == {"ok": 1}  # every malformed one in between was skipped
    assert link.online


async def test_payloads_over_128_kb_and_bad_updates_are_refused(link: AwsIotLink) -> None:
    with pytest.raises(MessageError, match="over the 131072-byte"):
        await link.send_query(face_query(crop_bytes=100 * 1024))
    with pytest.raises(MessageError, match="131072"):
        await link.update_shadow({"reported": {"blob": "x" * (130 * 1024)}})
    with pytest.raises(MessageError, match="desired"):
        await link.update_shadow({"reported": {}, "colour": "red"})
    await link.send_query(face_query())  # the link is fine


async def test_offline_link_raises_link_down_naming_the_cause(pki: TestPki) -> None:
    cert = pki.client(THING)
    cfg = AwsIotLinkConfig(type="awsiot", endpoint="127.0.0.1", port=free_port(), ca_file=pki.ca_file,
                           cert_file=cert.cert, key_file=cert.key, **FAST)
    async with AwsIotLink(THING, cfg) as lk:
        with pytest.raises(LinkDown, match="not connected") as e:
            await lk.wait_online(timeout=1.5)
        assert not isinstance(e.value, LinkAuthError)
        assert "CONNECTION_REFUSED" in str(e.value)
        with pytest.raises(LinkDown):
            await lk.send_query(face_query())


@pytest.mark.parametrize("problem", ["untrusted client certificate", "untrusted broker"])
async def test_wrong_certificates_fail_fast_with_the_cause(tls_broker: Mosquitto, pki: TestPki, problem: str) -> None:
    if problem == "untrusted client certificate":
        bad = pki.untrusted_client(THING)
        cfg = config(tls_broker, pki, cert_file=bad.cert, key_file=bad.key)
        expected = "rejected the client certificate"
    else:
        cfg = config(tls_broker, pki, ca_file=pki.rogue.ca_file)
        expected = "not trusted by ca_file"
    async with AwsIotLink(THING, cfg) as lk:
        started = time.monotonic()
        with pytest.raises(LinkAuthError) as e:
            await lk.wait_online(timeout=20)
        assert time.monotonic() - started < 5, "a refused certificate must not look like a slow broker"
    message = str(e.value)
    assert expected in message and f"{tls_broker.host}:{tls_broker.port}" in message
    assert "ssl" in message.lower() and str(cfg.cert_file) in message  # the TLS error and the files are named


async def test_unreadable_key_file_fails_at_start(tls_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> None:
    with pytest.raises(LinkAuthError, match="missing.key"):
        async with AwsIotLink(THING, config(tls_broker, pki, key_file=tmp_path / "missing.key")):
            pass


def test_config_is_strict_and_chosen_by_type(tmp_path: Path) -> None:
    base = {"type": "awsiot", "endpoint": "abc-ats.iot.eu-west-1.amazonaws.com", "cert_file": "c.pem",
            "key_file": "k.pem"}
    cfg = AwsIotLinkConfig.model_validate(base)
    assert (cfg.port, cfg.keep_alive_s, cfg.shadow_name, cfg.ca_file) == (8883, 30, None, None)
    assert AwsIotLink(THING, cfg).client_id == THING
    for bad in ({"colour": "red"}, {"reconnect_min_s": 5, "reconnect_max_s": 1}, {"keep_alive_s": 2},
                {"shadow_name": "bad/name"}, {"client_id": "x" * 129}):
        with pytest.raises(ValueError):
            AwsIotLinkConfig.model_validate({**base, **bad})

    full = parse_config({"link": {**base, "shadow_name": "facewatchd"}})
    assert isinstance(full.link, AwsIotLinkConfig)
    assert isinstance(create_link(THING, full.link, tmp_path), AwsIotLink)
    with pytest.raises(ConfigError, match=r"link\.cert_file: required key is missing"):
        parse_config({"link": {"type": "awsiot", "endpoint": "e", "key_file": "k.pem"}})


def commented_link_example(kind: str) -> dict[str, Any]:
    """The commented-out `[link]` example for `kind` at the end of etc/facewatchd.toml, uncommented."""
    lines = (Path(__file__).parents[2] / "etc" / "facewatchd.toml").read_text().splitlines()
    start = lines.index(f'# type = "{kind}"') - 1
    assert lines[start] == "# [link]"
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    return tomllib.loads("\n".join(block))


def test_the_documented_example_is_valid() -> None:
    config = parse_config(commented_link_example("awsiot"))
    assert isinstance(config.link, AwsIotLinkConfig)


@pytest.mark.timeout(120)
def test_the_daemon_names_a_face_through_the_awsiot_link(tls_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> None:
    """End to end as a user runs it: `facewatchd run` with `[link] type = "awsiot"` → mosquitto (mutual TLS)
    → `facewatchd resolver` → the shadow delta → the daemon names the face."""
    server_cert, device_cert = pki.client("facewatchd-resolver"), pki.client("door-1")
    server_toml = tmp_path / "server.toml"
    server_toml.write_text(
        f'[device]\nstate_dir = "{tmp_path / "server"}"\n[logging]\nformat = "json"\n'
        f'[server]\nhost = "{tls_broker.host}"\nport = {tls_broker.port}\nca_file = "{pki.ca_file}"\n'
        f'cert_file = "{server_cert.cert}"\nkey_file = "{server_cert.key}"\nreconnect_min_s = 0.1\n'
        f'reconnect_max_s = 0.5\n')
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", str(server_toml))
    server = subprocess.Popen([sys.executable, "-m", "facewatchd", "resolver", "--config", str(server_toml)],
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        Lines(server.stderr).until(lambda seen: "resolver_service_connected" in seen
                                   and "shadow service connected" in seen, timeout=60)
        device_toml = tmp_path / "device.toml"
        device_toml.write_text(
            f'[device]\nthing = "door-1"\nstate_dir = "{tmp_path / "device"}"\ndrain_timeout_s = 30\n'
            f'[logging]\nformat = "json"\n[uplink]\nanswer_timeout_s = 2\n'
            f'[[cameras]]\nid = "front"\nsource = "{FIXTURES / "obama1.jpg"}"\n'
            f'[link]\ntype = "awsiot"\nendpoint = "{tls_broker.host}"\nport = {tls_broker.port}\n'
            f'ca_file = "{pki.ca_file}"\ncert_file = "{device_cert.cert}"\nkey_file = "{device_cert.key}"\n')
        summary = json.loads(cli("run", "--config", str(device_toml), timeout=90).stdout)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        assert server.stdout is not None
        out = server.stdout.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert summary["resolver_calls"] == 1 and summary["pending"] == 0 and summary["link_online"], summary
    assert [p["name"] for p in summary["persons"].values()] == ["Barack Obama"], summary
    assert json.loads(out) == {"received": 1, "resolved": 1, "failed": 0, "skipped": {}}
