"""Real parts for the plugin tests: an HTTP receiver on a loopback port, an MQTT recorder, frame folders
made from the public-domain photos, and the daemon run inside a test's own event loop."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import aiomqtt
import cv2
import numpy as np

from facewatchd.app.config import Config
from facewatchd.app.device import Daemon, Summary
from facewatchd.plugins import PluginHost
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    at: float


@dataclass
class HttpReceiver:
    """A threaded HTTP server that records every request; `answers` maps a path to (status, delay_s)."""

    answers: dict[str, tuple[int, float]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(Request(self.command, self.path, body, dict(self.headers), time.monotonic()))
                status, delay = receiver.answers.get(self.path.split("?")[0], (200, 0.0))
                time.sleep(delay)
                payload = b"ok\n" if status < 300 else b"relay fault\n"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout under test)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class MqttRecorder:
    """Subscribes like Home Assistant would and keeps every message (topic, payload, retained)."""

    def __init__(self, broker: Mosquitto, *topics: str) -> None:
        self.broker = broker
        self.topics = topics
        self.messages: list[tuple[str, bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> "MqttRecorder":
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=f"ha-{time.monotonic_ns()}") as c:
            self._client = c
            for topic in self.topics:
                await c.subscribe(topic, qos=1)
            self._ready.set()
            async for m in c.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
                self.messages.append((str(m.topic), payload, bool(m.retain)))

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain)

    def last(self, topic: str) -> bytes | None:
        for t, payload, _ in reversed(self.messages):
            if t == topic:
                return payload
        return None

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]


async def read_retained(broker: Mosquitto, topic: str, quiet_s: float = 0.5) -> dict[str, bytes]:
    """Every retained message under `topic`, as a subscriber that connects now receives them."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="ha-restarted") as client:
        await client.subscribe(topic, qos=1)
        while True:
            try:
                message = await asyncio.wait_for(anext(aiter(client.messages)), quiet_s)
            except TimeoutError:
                return found
            found[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def stranger_photo(path: Path) -> Path:
    """One face cut from the 1927 Solvay photo (public domain), enlarged: someone nobody enrolled."""
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    x, y, w, h = 1186, 1143, 100, 127  # one sitter, alone in this crop (checked: YuNet finds one face)
    crop = image[y - h // 2:y + h + h // 2, x - w // 2:x + w + w // 2]
    cv2.imwrite(str(path), cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    return path


def frames_dir(path: Path, *runs: tuple[Path | str, int]) -> Path:
    """A folder of frames: each (photo, n) adds n copies; "blank" adds a grey frame, a scene cut that ends
    every track, so the next copies start a new track (a new visit)."""
    path.mkdir(parents=True, exist_ok=True)
    index = 0
    for photo, count in runs:
        for _ in range(count):
            index += 1
            target = path / f"{index:04d}.jpg"
            if photo == "blank":
                cv2.imwrite(str(target), np.full((480, 640, 3), 128, np.uint8))
            else:
                shutil.copy(photo, target)
    return path


async def run_in_loop(config: Config, host: PluginHost, until: Callable[[Daemon], Any] | None = None,
                      timeout: float = 60.0, link: Any = None) -> tuple[Daemon, Summary]:
    """Run the real daemon in this test's loop; with `until`, stop it (as SIGTERM would) once until(daemon)
    is awaited. Otherwise it ends with its file sources."""
    daemon = Daemon(config, host, link)
    task = asyncio.create_task(daemon.run())
    try:
        if until is not None:
            await asyncio.wait_for(until(daemon), timeout)
            daemon.request_stop()
        summary = await asyncio.wait_for(task, timeout)
    finally:
        if not task.done():
            daemon.request_stop()
            await asyncio.gather(task, return_exceptions=True)
    return daemon, summary
