"""Run the real daemon (cameras, detector, tracker, cache, embedded resolver) from a test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

from facewatchd.app.config import Config, parse_config
from facewatchd.app.device import Daemon, Summary
from facewatchd.plugins import PluginHost

ROOT = Path(__file__).parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE_CLIP = ROOT / "samples" / "short_hamilton_clip.mp4"


def make_config(state_dir: Path, *sources: str | Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "device": {"state_dir": str(state_dir), "drain_timeout_s": 15},
        "logging": {"format": "json", "level": "warning"},
        "cameras": [{"id": f"cam{i}", "source": str(s)} for i, s in enumerate(sources)],
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
    return parse_config(data)


def run_daemon(config: Config, plugins: PluginHost | None = None) -> Summary:
    host = plugins or PluginHost(config)
    if plugins is None:
        host.load()
    return asyncio.run(Daemon(config, host).run())


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The installed command line, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "facewatchd", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"facewatchd {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


class Lines:
    """A process's output, read line by line on a thread, so a test waits for a line with a deadline
    (a blocking readline() would hang the test if the process went quiet)."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.seen = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def read_queued(self) -> str:
        """Take in what has been read so far, without waiting."""
        with contextlib.suppress(queue.Empty):
            while (line := self._queue.get_nowait()) is not None:
                self.seen += line
        return self.seen

    def until(self, done: Callable[[str], bool], timeout: float = 60) -> str:
        """Read until done(everything seen so far) holds; AssertionError on timeout or end of output."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out after {timeout}s; the output ends with: {self.seen[-3000:]}") from None
            if line is None:
                raise AssertionError(f"the process ended; its output ends with: {self.seen[-3000:]}")
            self.seen += line
        return self.seen
