#!/usr/bin/env python3
"""Frames per second of the real daemon on a video with every built-in plugin enabled versus none.

The plugins talk to real endpoints started here: a mosquitto on a free loopback port (Home Assistant
discovery, MQTT alerts) and a local HTTP server in its own process (alert webhook, the door's HTTP
relay); face crops are published to HA and put in alerts (the costlier opt-ins), every unknown person
raises an alert on all three channels (webhook, MQTT, a `cat` command), metrics serve on a free port.
Every run starts from a copy of one warmed state dir (the clip already resolved once), so both setups
do the same pipeline work; the runs alternate (none, all, all, none, …) so drift in the machine's load
hits both alike. Reported per run and as medians: steady fps (first frame read to last, the pipeline
while plugins work beside it) and end-to-end fps (frames / Daemon.run's seconds: model loading,
plugin start and stop, and the final drain included), the loss with plugins, and CPU time per frame
(this process's threads plus the alert commands it ran): the machine's other load moves wall-clock
figures more than CPU time.

    .venv/bin/python bench/plugins_overhead.py samples/short_hamilton_clip.mp4 [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facewatchd.app.config import Config, parse_config  # noqa: E402
from facewatchd.app.device import Daemon  # noqa: E402
from facewatchd.plugins import PluginHost  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402  (the test suite's mosquitto runner)

TARGET_LOSS = 0.02


# The webhook receiver and door relay: answers 200 to anything. Its own process, like a real receiver
# elsewhere on the network, so its CPU is not counted as the daemon's.
SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def _ok(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_POST = do_PUT = _ok
    def log_message(self, *args): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def config(video: Path, state: Path, plugins: dict[str, Any]) -> Config:
    return parse_config({"device": {"state_dir": str(state)}, "logging": {"level": "error"},
                         "cameras": [{"id": "bench", "source": str(video)}], "plugins": plugins})


def all_plugins(broker: Mosquitto, http: str, work: Path) -> dict[str, Any]:
    mqtt = {"host": broker.host, "port": broker.port}
    return {
        "homeassistant": {**mqtt, "publish_face_crops": True},
        "door": {"allow": ["Lin-Manuel Miranda"], "audit_log": str(work / "audit.jsonl"),
                 "backend": {"type": "http", "unlock_url": f"{http}/unlock", "lock_url": f"{http}/lock"}},
        "alerts": {"on_unknown": True, "include_crop": True, "webhook": {"url": f"{http}/hook"},
                   "mqtt": mqtt, "command": {"argv": ["cat"]}},
        "metrics": {"port": 0},
    }


@dataclass
class Run:
    frames: int
    seconds: float  # Daemon.run() from start to return: model loading, plugin start/stop, drain included
    steady_fps: float  # from the first frame to the last one read: the pipeline itself
    cpu_s: float  # CPU time of this process (all threads) and its children (alert commands) for the run
    failures: dict[str, int]


async def run_daemon(cfg: Config) -> Run:
    host = PluginHost(cfg)
    host.load()
    daemon = Daemon(cfg, host)
    marks: list[tuple[int, float]] = []  # (frames read, when), polled beside the pipeline

    async def watch() -> None:
        while True:
            frames = daemon.cameras[0].stats.frames
            if frames and (not marks or frames != marks[-1][0]):
                marks.append((frames, time.perf_counter()))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    cpu0 = cpu_seconds()
    summary = await daemon.run()
    cpu = cpu_seconds() - cpu0
    watcher.cancel()
    (first, t0), (last, t1) = marks[0], marks[-1]
    return Run(summary.frames, summary.seconds, (last - first) / (t1 - t0), cpu, dict(host.failures))


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setup (at least 3)")
    args = parser.parse_args()
    runs = max(3, args.runs)
    from facewatchd.logs import configure_logging

    configure_logging("console", "error")
    with tempfile.TemporaryDirectory(prefix="fw-plugins-bench-") as tmp:
        work = Path(tmp)
        sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None
        http = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        with Mosquitto(work / "mosquitto") as broker:
            template = work / "warm"
            warm = asyncio.run(run_daemon(config(args.video, template, {})))
            print(f"warm-up (fresh state, resolver calls): {warm.frames} frames in {warm.seconds:.2f} s")
            setups = {"none": {}, "all": all_plugins(broker, http, work)}
            results: dict[str, list[Run]] = {"none": [], "all": []}
            for i in range(runs):
                for name in (("none", "all") if i % 2 == 0 else ("all", "none")):
                    state = work / f"run-{i}-{name}"
                    shutil.copytree(template, state)
                    r = asyncio.run(run_daemon(config(args.video, state, setups[name])))
                    results[name].append(r)
                    print(f"run {i + 1} {name:>4}: {r.frames} frames, steady {r.steady_fps:6.2f} fps; "
                          f"end to end {r.seconds:.2f} s = {r.frames / r.seconds:.2f} fps; "
                          f"CPU {1000 * r.cpu_s / r.frames:.1f} ms/frame"
                          + (f"  hook failures {r.failures}" if r.failures else ""))
        sink.terminate()
        sink.wait()
    for label, fps in (("steady", lambda r: r.steady_fps), ("end to end", lambda r: r.frames / r.seconds)):
        none = statistics.median(fps(r) for r in results["none"])
        with_all = statistics.median(fps(r) for r in results["all"])
        print(f"median {label} fps: none {none:.2f}, all plugins {with_all:.2f}; ratio {with_all / none:.4f}, "
              f"loss {1 - with_all / none:+.2%} (target < {TARGET_LOSS:.0%})")
    cpu_none = statistics.median(r.cpu_s / r.frames for r in results["none"])
    cpu_all = statistics.median(r.cpu_s / r.frames for r in results["all"])
    print(f"median CPU per frame: none {1000 * cpu_none:.1f} ms, all plugins {1000 * cpu_all:.1f} ms; "
          f"extra {cpu_all / cpu_none - 1:+.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
