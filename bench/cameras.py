#!/usr/bin/env python3
"""Several cameras in one daemon: how many 10 fps cameras one process holds before frames drop.

Each camera plays the same clip at `fps = 10`, `pace = "realtime"` (frames arrive at the video's own rate
and a frame not taken before the next one arrives is dropped, as from a live camera). Each camera count
runs the real Daemon in its own subprocess (this script with --cameras), so CPU and peak RSS are its own.

Figures per camera count: frames delivered, frames dropped, CPU seconds (user + sys of the whole
process), wall seconds, cores used (CPU / wall), peak RSS, and where the CPU went: per thread group
(the event loop, the CV pool, the capture threads), sampled from /proc while it runs.

    .venv/bin/python bench/cameras.py samples/short_hamilton_clip.mp4
    .venv/bin/python bench/cameras.py samples/short_hamilton_clip.mp4 --cameras-list 4 --repeat 3

With --baseline DIR (repeatable; another checkout of the code, e.g. `git archive <commit> | tar -x -C DIR`), each
run of this code is paired with a run of DIR's, one after the other, so both see the same load on the
machine: the table then has both, and the JSON line the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import cpu_seconds, peak_rss_mb  # noqa: E402 - the same figures as the throughput bench

COUNTS = (1, 2, 4, 6)
FPS = 10.0
TARGET = {"cameras": 6, "dropped_share": 0.01}


def thread_group(name: str) -> str:
    """A Python thread's name as a group: the loop, the CV pool, capture threads, asyncio's default pool."""
    if name == "MainThread":
        return "loop"
    if name.startswith("cv_"):
        return "cv-pool"
    if name.startswith("sface_"):
        return "sface"
    if name.startswith("camera-"):
        return "capture"
    if name.startswith("asyncio_"):
        return "to_thread"
    return "other"


class ThreadCpu:
    """CPU seconds per thread group, read from /proc/self/task every `every` s (a thread's last reading
    counts when it ends; threads not started from Python, e.g. FFmpeg's decoders, fall under "native")."""

    def __init__(self, every: float = 0.2) -> None:
        self._every = every
        self._seen: dict[int, tuple[str, float]] = {}  # native thread id → (group, CPU seconds)
        self._halt = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> ThreadCpu:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._halt.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._halt.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for task in Path("/proc/self/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # ended between the listing and the read
            fields = stat[stat.rindex(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime
            tid = int(task.name)
            group = thread_group(names[tid]) if tid in names else self._seen.get(tid, ("native", 0.0))[0]
            self._seen[tid] = (group, cpu)

    def groups(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for group, cpu in self._seen.values():
            if group != "other" or cpu > 0:
                out[group] = round(out.get(group, 0.0) + cpu, 2)
        out.pop("other", None) if not out.get("other") else None
        return dict(sorted(out.items()))


def child(video: Path, cameras: int, overrides: dict[str, Any], pace: str) -> dict[str, Any]:
    try:
        from facewatchd.app.config import parse_config
        from facewatchd.app.device import Daemon
    except ImportError:  # a --baseline checkout from before the two applications moved to facewatchd/app
        from facewatchd.config import parse_config  # type: ignore[attr-defined,no-redef]
        from facewatchd.daemon import Daemon  # type: ignore[no-redef]
    from facewatchd.logs import configure_logging
    from facewatchd.plugins import PluginHost

    cpu, wall = cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facewatchd-cameras-") as state, ThreadCpu() as threads:
        config = parse_config({
            "device": {"state_dir": state}, "logging": {"format": "json", "level": "warning"},
            "cameras": [{"id": f"cam{i}", "source": str(video), "fps": FPS, "pace": pace}
                        for i in range(cameras)], **overrides})
        configure_logging(config.logging.format, config.logging.level)
        host = PluginHost(config)
        host.load()
        s = asyncio.run(Daemon(config, host).run())
    cpu_s, wall_s = cpu_seconds() - cpu, time.perf_counter() - wall
    # asap: how many cameras at FPS this process could hold, from the frames it took per wall second
    return {"cameras": cameras, "frames": s.frames, "capacity_cameras": round(s.frames / wall_s / FPS, 2),
            "dropped": s.frames_dropped, "gated": s.frames_gated,
            "tracks": s.tracks, "embeds": s.embeds, "cpu_s": round(cpu_s, 2), "wall_s": round(wall_s, 2),
            "cores": round(cpu_s / wall_s, 2), "peak_rss_mb": peak_rss_mb(), "threads_cpu_s": threads.groups()}


def run_child(video: Path, cameras: int, overrides: dict[str, Any], pace: str, code: Path = ROOT) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, str(video.resolve()), "--cameras", str(cameras), "--code",
                           str(code), "--pace", pace, "--overrides", json.dumps(overrides)],
                          capture_output=True, text=True, cwd=code)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{cameras}-camera run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median drop count (then CPU), so its figures belong together."""
    ordered = sorted(runs, key=lambda r: (r["dropped"], r["cpu_s"]))
    return {**ordered[len(ordered) // 2], "dropped_runs": [r["dropped"] for r in runs],
            "cpu_runs": [r["cpu_s"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--cameras-list", default=",".join(map(str, COUNTS)), help="camera counts, e.g. 1,2,4,6")
    parser.add_argument("--repeat", type=int, default=1, help="runs per camera count (the median is reported)")
    parser.add_argument("--overrides", default="{}", help='config sections as JSON, e.g. {"device": {"workers": 3}}')
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="a checkout of other code to run beside this one (repeatable)")
    parser.add_argument("--pace", choices=("realtime", "asap"), default="realtime",
                        help="asap: frames as fast as the daemon takes them (none dropped): its capacity")
    parser.add_argument("--cameras", type=int, help=argparse.SUPPRESS)  # a child run
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)  # whose facewatchd it runs
    args = parser.parse_args()
    if not args.video.is_file():
        parser.error(f"no such video: {args.video}")
    overrides = json.loads(args.overrides)
    if args.cameras:
        sys.path.insert(0, str(args.code))
        print(json.dumps(child(args.video, args.cameras, overrides, args.pace)))
        return

    counts = [int(c) for c in re.split(r"[,\s]+", args.cameras_list) if c]
    load_before = load_average()
    codes = {"this": ROOT, **{"baseline" if i == 0 else f"baseline{i + 1}": b.resolve()
                              for i, b in enumerate(args.baseline)}}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {n: [] for n in counts} for name in codes}
    for n in counts:
        for _ in range(args.repeat):
            for name, code in codes.items():  # paired, one after the other: the same load for both
                runs[name][n].append(run_child(args.video, n, overrides, args.pace, code))
    tables = {name: [median_run(runs[name][n]) for n in counts] for name in codes}
    report: dict[str, Any] = {"pace": args.pace, "cpus": os.cpu_count(), "load_average_before": load_before,
                              "overrides": overrides}
    for name, rows in tables.items():
        # realtime: the counts that dropped at most the target share; asap never drops: what capacity says
        held = [r["cameras"] for r in rows if (r["dropped"] <= TARGET["dropped_share"] * r["frames"]
                                               if args.pace == "realtime" else r["capacity_cameras"] >= r["cameras"])]
        report[name] = {"cameras_held": max(held, default=0), "target_met": max(held, default=0) >= TARGET["cameras"],
                        "runs": rows}
    for name in tables:
        if name != "this":
            report[f"cpu_ratio_this_vs_{name}"] = {
                r["cameras"]: round(r["cpu_s"] / b["cpu_s"], 2) for r, b in zip(tables["this"], tables[name])}
    report["load_average_after"] = load_average()
    print(f"{args.video.name} on every camera at {FPS:g} fps, {args.pace}; {os.cpu_count()} CPUs, load average "
          f"{load_before} before, {report['load_average_after']} after; median of {args.repeat} run(s)")
    for name, rows in tables.items():
        print(f"{name} ({codes[name]}):")
        print(f"{'cameras':>7}{'frames':>8}{'dropped':>9}{'CPU s':>8}{'wall s':>8}{'cores':>7}{'RSS MB':>8}"
              f"{'capacity':>9}"
              f"  CPU by thread")
        for r in rows:
            threads = ", ".join(f"{k} {v:.1f}" for k, v in r["threads_cpu_s"].items())
            print(f"{r['cameras']:>7}{r['frames']:>8}{r['dropped']:>9}{r['cpu_s']:>8.1f}{r['wall_s']:>8.1f}"
                  f"{r['cores']:>7.2f}{r['peak_rss_mb']:>8.0f}{r['capacity_cameras']:>9.2f}  {threads}"
                  f"  (dropped per run {r['dropped_runs']})")
        print(f"  cameras held with <= {TARGET['dropped_share']:.0%} dropped: {report[name]['cameras_held']} "
              f"(target {TARGET['cameras']})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
