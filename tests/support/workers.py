"""Resolver workers as a user runs them (`facewatchd resolver --config`, one process each) on a shared
PostgreSQL and one mosquitto, and a simulated device that sends crops and reads its shadow's deltas."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from facewatchd.messages import FaceQuery, uplink_topic
from tests.support.broker import Mosquitto
from tests.support.daemon import ROOT, Lines

GROUP = "resolvers"


def worker_config(folder: Path, name: str, broker: Mosquitto, dsn: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "facewatchd.toml"
    path.write_text(f"""
[device]
state_dir = "{folder}"
[logging]
format = "json"
level = "info"
[resolver]
type = "postgresql"
dsn = "{dsn}"
connect_timeout_s = 2
[server]
host = "{broker.host}"
port = {broker.port}
client_id = "{name}"
share_group = "{GROUP}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
""")
    return path


class Worker:
    """One `facewatchd resolver` process; its JSON logs are read as they come."""

    def __init__(self, folder: Path, name: str, broker: Mosquitto, dsn: str) -> None:
        self.name = name
        self.config = worker_config(folder, name, broker, dsn)
        self.proc: subprocess.Popen[str] | None = None
        self.logs: Lines | None = None

    def start(self, timeout: float = 60, wait: bool = True) -> None:
        """Start it, and (unless `wait` is false) wait until it has subscribed and its shadow service too."""
        self.proc = subprocess.Popen([sys.executable, "-m", "facewatchd", "resolver", "--config", str(self.config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.logs = Lines(self.proc.stderr)
        if wait:
            self.wait_connected(timeout)

    def wait_connected(self, timeout: float = 60) -> None:
        assert self.logs is not None
        self.logs.until(lambda seen: "resolver_service_connected" in seen and "shadow service connected" in seen,
                        timeout)

    def events(self, event: str) -> list[dict[str, Any]]:
        """The log lines of `event` it has written so far."""
        assert self.logs is not None
        return [json.loads(line) for line in self.logs.read_queued().splitlines() if f'"{event}"' in line]

    async def logged(self, event: str, times: int = 1, timeout: float = 60) -> None:
        """Wait (reading its logs on a thread) until it has logged `event` `times` times."""
        assert self.logs is not None
        logs = self.logs
        await asyncio.to_thread(logs.until, lambda seen: seen.count(f'"{event}"') >= times, timeout)

    def stop(self) -> dict[str, Any]:
        """SIGTERM; the stats line it prints at the end."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "Worker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class Device:
    """What devices see: a client that publishes unknown faces and reads the labels in their shadows' deltas."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.labels: dict[str, dict[str, Any]] = {}  # face id → its label
        self.times: Counter[str] = Counter()  # face id → deltas that carried its label

    async def send(self, query: FaceQuery) -> None:
        await self.client.publish(uplink_topic(query.thing), query.to_json(), qos=1)

    async def answers(self, face_ids: set[str], timeout: float = 60, times: int = 1) -> dict[str, dict[str, Any]]:
        """Wait until each face id's label has come `times` times (a resent face is answered again)."""
        async with asyncio.timeout(timeout):
            async for message in self.client.messages:
                for face_id, label in json.loads(message.payload)["state"].get("faces", {}).items():
                    self.labels[face_id] = label
                    self.times[face_id] += 1
                if all(self.times[f] >= times for f in face_ids):
                    break
        return {f: self.labels[f] for f in face_ids}
