"""The deploy files for several resolver workers: the systemd template unit (facewatchd-resolver@N) carries
the settings we rely on and passes `systemd-analyze verify`; the shipped mosquitto config and ACL, with its
worker blocks enabled, let two workers (their own certificates) share the device requests through
$share/…, and answer each device through its own shadow only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import AsyncIterator

import aiomqtt
import pytest

from facewatchd.resolver.mqtt_adapter import CropEmbedder, ResolverService, ResolverServiceConfig
from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.stores import PostgresResolverStores
from tests.deploy.test_mosquitto import DEPLOY, FAST, face_query, shipped_config, tls
from tests.support.broker import HOST, Mosquitto, free_port
from tests.support.tls import TestPki
from tests.test_systemd import HARDENING, UNITS, parse_unit

pytestmark = pytest.mark.timeout(120)
TEMPLATE = UNITS / "facewatchd-resolver@.service"


def test_the_worker_template_unit_carries_the_settings_we_rely_on() -> None:
    service = parse_unit(TEMPLATE)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], key
    config = "--config /etc/facewatchd/resolver-%i.toml"
    assert service["ExecStart"] == [f"/opt/facewatchd/bin/facewatchd resolver {config}"]
    assert service["ExecStartPre"] == [f"/opt/facewatchd/bin/facewatchd check-config {config}"]
    assert service["StateDirectory"] == ["facewatchd-resolver-%i"]  # workers can share a machine
    assert "postgresql.service" in parse_unit(TEMPLATE)["Unit"]["After"][0]


def test_the_worker_template_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze: `make servers` installs Debian's systemd package"
    facewatchd = Path(sys.executable).parent / "facewatchd"
    unit = tmp_path / "facewatchd-resolver@1.service"  # an instance of the template
    unit.write_text(TEMPLATE.read_text().replace("/opt/facewatchd/bin/facewatchd", str(facewatchd)))
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "facewatchd" in line]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def with_worker_blocks(acl: str) -> str:
    """The shipped ACL with its commented worker blocks enabled, as an operator would."""
    lines, in_workers = [], False
    for line in acl.splitlines():
        in_workers = in_workers or line.startswith("# -- several resolver workers")
        enabled = in_workers and (line.startswith("# user ") or line.startswith("# topic "))
        lines.append(line[2:] if enabled else line)
    return "\n".join(lines) + "\n"


@pytest.fixture
def workers_broker(tmp_path: Path, pki: TestPki) -> AsyncIterator[Mosquitto]:
    port, workdir = free_port(), tmp_path / "mosquitto"
    workdir.mkdir()
    acl = workdir / "facewatchd.acl"
    acl.write_text(with_worker_blocks((DEPLOY / "facewatchd.acl").read_text()))
    config = shipped_config(port, pki, workdir).replace(str(DEPLOY / "facewatchd.acl"), str(acl))
    with Mosquitto(workdir, pki=pki, port=port, config=config) as broker:
        yield broker


def worker_config(broker: Mosquitto, pki: TestPki, n: int) -> ResolverServiceConfig:
    own, shadow = pki.client(f"facewatchd-resolver-{n}"), pki.client(f"facewatchd-resolver-{n}-shadow")
    return ResolverServiceConfig(host=broker.host, port=broker.port, ca_file=pki.ca_file, cert_file=own.cert,
                                 key_file=own.key, shadow_cert_file=shadow.cert, shadow_key_file=shadow.key,
                                 client_id=f"facewatchd-resolver-{n}", share_group="resolvers", **FAST)


async def test_two_workers_under_the_shipped_acl_share_the_requests(workers_broker: Mosquitto, pki: TestPki,
                                                                    postgres_dsn: str, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        services = []
        for n in (1, 2):
            stores = await stack.enter_async_context(
                PostgresResolverStores(PostgresResolverConfig(dsn=postgres_dsn), CropEmbedder()))
            services.append(await stack.enter_async_context(
                ResolverService(worker_config(workers_broker, pki, n), tmp_path / f"w{n}", stores=stores)))
        for service in services:
            await service.ready(timeout=15)
        door1 = await stack.enter_async_context(aiomqtt.Client(HOST, workers_broker.port, identifier="door-1",
                                                               tls_params=tls(pki, pki.client("door-1"))))
        await door1.subscribe("$aws/things/door-1/shadow/update/delta", qos=1)
        door2 = await stack.enter_async_context(aiomqtt.Client(HOST, workers_broker.port, identifier="door-2",
                                                               tls_params=tls(pki, pki.client("door-2"))))
        queries = [face_query("door-1") for _ in range(4)]
        for q in queries:
            await door1.publish(f"facewatchd/door-1/faces/unknown", q.to_json(), qos=1)
        await door2.publish("facewatchd/door-2/faces/unknown", face_query("door-2").to_json(), qos=1)
        answered: set[str] = set()
        async with asyncio.timeout(60):
            async for message in door1.messages:
                assert "door-2" not in str(message.topic), message.topic  # never door-2's face
                answered |= set(json.loads(message.payload)["state"].get("faces", {}))
                if answered >= {q.face_id for q in queries}:
                    break
        async with asyncio.timeout(30):
            while sum(s.stats.resolved for s in services) < 5:  # door-2's face too
                await asyncio.sleep(0.05)
        received = [s.stats.received for s in services]
    assert sum(received) == 5 and all(received), received  # both workers took their share


async def test_a_device_that_joins_the_workers_group_gets_nothing_and_takes_no_turn(
        workers_broker: Mosquitto, pki: TestPki, postgres_dsn: str, tmp_path: Path) -> None:
    """An attacker with door-2's certificate subscribes to the workers' shared groups by their configured
    names (requests and shadows) and to every device's requests and shadows. The broker checks each message
    against its ACL, so it receives none of door-1's; and since the workers' real group names carry their
    share key, it is not a member of their shares: every one of door-1's requests reaches the worker at the
    first send (without the key the broker handed the attacker half of them, and dropped them)."""
    async with contextlib.AsyncExitStack() as stack:
        stores = await stack.enter_async_context(
            PostgresResolverStores(PostgresResolverConfig(dsn=postgres_dsn), CropEmbedder()))
        service = await stack.enter_async_context(
            ResolverService(worker_config(workers_broker, pki, 1), tmp_path / "w1", stores=stores))
        await service.ready(timeout=15)
        thief = await stack.enter_async_context(aiomqtt.Client(HOST, workers_broker.port, identifier="door-2",
                                                               tls_params=tls(pki, pki.client("door-2"))))
        for topic in ("$share/resolvers/facewatchd/+/faces/unknown", "facewatchd/+/faces/unknown",
                      "$share/resolvers-shadow/$aws/things/+/shadow/get", "$aws/things/+/shadow/#"):
            await thief.subscribe(topic, qos=1)
        stolen: list[str] = []

        async def listen() -> None:
            async for message in thief.messages:
                stolen.append(str(message.topic))

        listener = asyncio.create_task(listen())
        door1 = await stack.enter_async_context(aiomqtt.Client(HOST, workers_broker.port, identifier="door-1",
                                                               tls_params=tls(pki, pki.client("door-1"))))
        await door1.subscribe("$aws/things/door-1/shadow/update/delta", qos=1)
        await door1.subscribe("$aws/things/door-1/shadow/get/+", qos=1)  # its shadow's answer: the other share
        queries = [face_query("door-1") for _ in range(6)]
        for q in queries:  # each sent once: a raw client, no outbox to resend what a broker dropped
            await door1.publish("facewatchd/door-1/faces/unknown", q.to_json(), qos=1)
        answered: set[str] = set()
        got_shadow = False
        async with asyncio.timeout(60):
            async for message in door1.messages:
                got_shadow = got_shadow or str(message.topic).endswith("/get/accepted")
                answered |= set(json.loads(message.payload).get("state", {}).get("faces", {}))
                if answered >= {q.face_id for q in queries}:
                    if got_shadow:
                        break
                    await door1.publish("$aws/things/door-1/shadow/get", b"{}", qos=1)
        listener.cancel()
    assert service.stats.received == 6 and not stolen, (service.stats, stolen)
