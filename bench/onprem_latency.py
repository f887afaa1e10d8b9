#!/usr/bin/env python3
"""Time from a face first appearing to its label arriving, over the on-prem path, and what an outage loses.

Setup, all real and on this machine: mosquitto on a free loopback port (mutual TLS unless --plain),
`facewatchd resolver` as its own process (resolver + shadow service, one command), and the daemon in this
process with `[link] type = "mqtt"`. The camera is a directory of frames played in real time: the 29
people of the 1927 Solvay conference photo, one after another, each face cut out (1.4x its box), placed in a 960x720
frame (never in the same place twice in a row) and held for --hold frames at --fps.

For every face that went to the resolver: appear → label (its track's first frame to its label arriving
at the device) and query → label (the `face_query_sent` log to the label arriving). A label's arrival is
when the shadow's /update/delta carrying it reaches an observer subscribed beside the device on the
same broker (the device applies it on receipt; this also times labels that land after the face left).
Faces the device cache named (no resolver call) are counted but not timed.

With --outage S the broker is killed (SIGKILL) once a third of the faces were sent, and restarted S
seconds later on the same port. Lost = faces sent that never got a label; resolved twice = face ids the
resolver resolved more than once (it logs `face_resolved` only on a first resolution).

    .venv/bin/python bench/onprem_latency.py                 # latency
    .venv/bin/python bench/onprem_latency.py --outage 5      # latency through a 5 s broker crash, losses
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import cv2
import numpy as np
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facewatchd.app.config import parse_config  # noqa: E402
from facewatchd.app.device import Daemon  # noqa: E402
from facewatchd.events import FaceEvent  # noqa: E402
from facewatchd.hookspecs import hookimpl  # noqa: E402
from facewatchd.link.mqtt_client import tls_params  # noqa: E402
from facewatchd.plugins import PluginHost  # noqa: E402
from facewatchd.vision.detector import YuNetDetector  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402
from tests.support.tls import TestPki  # noqa: E402

PHOTO = ROOT / "tests" / "fixtures" / "solvay_conference_1927.jpg"
CELL, COLS, ROWS = 240, 4, 3


def write_frames(directory: Path, hold: int) -> int:
    """Each Solvay face cut out and shown for `hold` frames, in cell 5*i of a 4x3 grid; returns faces."""
    image = cv2.imread(str(PHOTO))
    faces = sorted(YuNetDetector().detect(image), key=lambda f: (f.box[1] // 150, f.box[0]))
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, f in enumerate(faces):
        x, y, w, h = f.box
        side = int(max(w, h) * 1.4)  # tight enough to leave the neighbours out
        x0, y0 = max(0, int(x + w / 2) - side // 2), max(0, int(y + h / 2) - side // 2)
        crop = cv2.resize(image[y0:y0 + side, x0:x0 + side], (200, 200), interpolation=cv2.INTER_AREA)
        frame = np.full((ROWS * CELL, COLS * CELL, 3), 96, np.uint8)
        row, col = divmod((5 * i) % (COLS * ROWS), COLS)
        frame[row * CELL + 20:row * CELL + 220, col * CELL + 20:col * CELL + 220] = crop
        for _ in range(hold):
            cv2.imwrite(str(directory / f"{n:04d}.jpg"), frame)
            n += 1
    return len(faces)


class FirstSeen:
    """A plugin: when each track first appeared (the `face_detected` hook fires on a track's first frame)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    @hookimpl
    async def face_detected(self, event: FaceEvent) -> None:
        self.at.setdefault(event.track_id, time.monotonic())


async def observe_labels(broker: Mosquitto, tls: Any, thing: str, arrived: dict[str, float]) -> None:
    """When each face's label first reached the broker's subscribers (the device is one of them)."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-observer", clean_session=False,
                              tls_params=tls) as client:
        await client.subscribe(f"$aws/things/{thing}/shadow/update/delta", qos=1)
        async for message in client.messages:
            faces = json.loads(message.payload).get("state", {}).get("faces", {})
            for face_id in faces:
                arrived.setdefault(face_id, time.monotonic())


def capture_logs(into: list[dict[str, Any]]) -> None:
    """Keep every log event of this process, stamped with time.monotonic() as it is emitted."""

    def keep(_: Any, __: str, event: dict[str, Any]) -> Any:
        into.append({**event, "t": time.monotonic()})
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.processors.add_log_level, keep])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(np.ceil(q / 100 * len(ordered))) - 1))]  # nearest rank


async def wait_for_file_text(path: Path, needles: tuple[str, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(n in path.read_text() for n in needles):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: {needles} not logged in {timeout}s:\n{path.read_text()[-2000:]}")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    faces = write_frames(work / "frames", args.hold)
    pki = None if args.plain else TestPki(work / "pki")
    broker = Mosquitto(work / "mosquitto", pki=pki)
    broker.start()
    tls: dict[str, str] = {}
    server_tls: dict[str, str] = {}
    observer_tls = None
    if pki is not None:
        device, server, observer = (pki.client(n) for n in ("bench-door", "facewatchd-resolver", "observer"))
        tls = {"ca_file": str(pki.ca_file), "cert_file": str(device.cert), "key_file": str(device.key)}
        server_tls = {"ca_file": str(pki.ca_file), "cert_file": str(server.cert), "key_file": str(server.key)}
        observer_tls = tls_params(pki.ca_file, observer.cert, observer.key)
    server_toml = work / "server.toml"
    server_toml.write_text(
        f'[device]\nstate_dir = "{work / "server"}"\n[logging]\nformat = "json"\n'
        f'[server]\nhost = "{broker.host}"\nport = {broker.port}\nreconnect_min_s = 0.2\nreconnect_max_s = 2.0\n'
        + "".join(f'{k} = "{v}"\n' for k, v in server_tls.items()))
    server_log = work / "resolver.log"
    with open(server_log, "w") as log_file:
        resolver = subprocess.Popen([sys.executable, "-m", "facewatchd", "resolver", "--config", str(server_toml)],
                                    cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                    stdout=subprocess.DEVNULL, stderr=log_file)
    logs: list[dict[str, Any]] = []
    arrived: dict[str, float] = {}
    observing: asyncio.Task[None] | None = None
    try:
        await wait_for_file_text(server_log, ('"resolver_service_connected"', '"shadow service connected"'), 60)
        config = parse_config({
            "device": {"thing": "bench-door", "state_dir": str(work / "device"), "drain_timeout_s": 60},
            "uplink": {"answer_timeout_s": 2.0},
            # SFace at its default 0.363 takes some of these 1927 faces for one another (max 0.46 between two
            # people here): a stricter cache sends every person up, so every one of them is timed
            "identity": {"name_threshold": args.cache_threshold},
            "cameras": [{"id": "door", "source": str(work / "frames"), "pace": "realtime", "fps": args.fps,
                         "loop": True}],
            "link": {"type": "mqtt", "host": broker.host, "port": broker.port, "reconnect_min_s": 0.2,
                     "reconnect_max_s": 2.0, **tls},
        })
        observing = asyncio.create_task(observe_labels(broker, observer_tls, "bench-door", arrived))
        await asyncio.sleep(0.5)  # subscribed before the first face
        host = PluginHost(config)
        first_seen = FirstSeen()
        host.register("bench", first_seen, "bench")
        capture_logs(logs)
        daemon = Daemon(config, host)
        task = asyncio.create_task(daemon.run())
        loop_frames = faces * args.hold
        outage_done = args.outage is None
        while daemon.cameras[0].stats.frames < loop_frames:  # one pass over every face
            await asyncio.sleep(0.05)
            sent = sum(1 for e in logs if e["event"] == "face_query_sent")
            if not outage_done and sent >= faces // 3:
                observing.cancel()  # the observer has no reconnect loop: it reconnects after the outage
                await asyncio.gather(observing, return_exceptions=True)
                await asyncio.to_thread(broker.kill)
                await asyncio.sleep(args.outage)
                await asyncio.to_thread(broker.start)
                observing = asyncio.create_task(observe_labels(broker, observer_tls, "bench-door", arrived))
                outage_done = True
        deadline = time.monotonic() + 60
        while daemon.uplink is not None and daemon.uplink.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the device clear the last labels before it stops
        daemon.request_stop()
        summary = await asyncio.wait_for(task, 120)
    finally:
        if observing is not None:
            observing.cancel()
            await asyncio.gather(observing, return_exceptions=True)
        resolver.terminate()
        resolver.wait(30)
        broker.stop()

    sent_at = {e["track_id"]: (e["face_id"], e["t"]) for e in logs if e["event"] == "face_query_sent"}
    timed = [t for t, (face_id, _) in sent_at.items() if face_id in arrived and t in first_seen.at]
    appear = [arrived[sent_at[t][0]] - first_seen.at[t] for t in timed]
    query = [arrived[sent_at[t][0]] - sent_at[t][1] for t in timed]
    server_events = [json.loads(line) for line in server_log.read_text().splitlines() if line.startswith("{")]
    resolved = Counter(e["face_id"] for e in server_events if e.get("event") == "face_resolved")
    sent_ids = {fid for fid, _ in sent_at.values()}
    assert daemon.recognizer is not None
    # a face's label is in: its cache entries carry the person (whether or not its track was still in view)
    labelled_ids = {e.face_id for e in daemon.recognizer.cache.entries() if e.face_id and e.person_id}

    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"median_ms": round(1000 * statistics.median(values), 1),
                "p95_ms": round(1000 * percentile(values, 95), 1), "max_ms": round(1000 * max(values), 1)}

    return {
        "tls": pki is not None, "cache_threshold": args.cache_threshold, "fps": args.fps,
        "hold_frames": args.hold, "outage_s": args.outage,
        "faces_shown": faces, "faces_sent": len(sent_at), "faces_timed": len(timed),
        "cache_hits": summary.cache_hits,
        "appear_to_label": stats(appear), "query_to_label": stats(query),
        "lost": len(sent_ids - labelled_ids), "sent_not_resolved": len(sent_ids - set(resolved)),
        "resolved_twice": sum(1 for n in resolved.values() if n > 1),
        "resends": summary.resolver_retries, "pending_at_end": summary.pending,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=8.0, help="camera frames per second (real time)")
    parser.add_argument("--hold", type=int, default=8, help="frames each face stays in view")
    parser.add_argument("--outage", type=float, default=None, help="kill the broker for this many seconds")
    parser.add_argument("--plain", action="store_true", help="plain MQTT instead of mutual TLS")
    parser.add_argument("--cache-threshold", type=float, default=0.5, help="device cache match threshold")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onprem-bench-") as work:
        result = asyncio.run(run(args, Path(work)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
