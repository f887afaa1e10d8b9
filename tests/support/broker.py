"""A real mosquitto on a free loopback port, plain or mutual TLS, that tests can stop and restart.

Synchronous on purpose (it is test scaffolding); from async tests call start/stop/restart through
`asyncio.to_thread` so the event loop keeps serving the clients under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from tests.support.process import ServerProcess
from tests.support.tls import TestPki

HOST = "127.0.0.1"


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if path is None:
        raise RuntimeError("mosquitto not found on PATH or at /usr/sbin/mosquitto (make servers installs it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Mosquitto(ServerProcess):
    """One mosquitto process; the port stays the same across restarts so clients can reconnect."""

    def __init__(self, workdir: Path, *, pki: TestPki | None = None, port: int | None = None,
                 config: str | None = None, log_subscriptions: bool = False) -> None:
        self.workdir = workdir
        self.pki = pki
        self.host = HOST
        self.port = port or free_port()
        self.log_file = workdir / "mosquitto.log"
        self.conf_file = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_subscriptions = log_subscriptions
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_file.write_text(config if config is not None else self._config())

    @property
    def tls(self) -> bool:
        return self.pki is not None

    def _config(self) -> str:
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ] + (["log_type subscribe"] if self.log_subscriptions else [])
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise mosquitto drops to 'mosquitto', who cannot read tmp files
        if self.pki is not None:
            lines += [
                f"cafile {self.pki.ca_file}",
                f"certfile {self.pki.server.cert}",
                f"keyfile {self.pki.server.key}",
                "require_certificate true",
                "use_identity_as_username true",
            ]
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf_file)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on {HOST}:{self.port} within {timeout}s\n{self.log()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop (SIGTERM): clients see their connection closed."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), like a crashed broker or a pulled cable on the broker side."""
        self._end(signal.SIGKILL, 5.0)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def subscribed(self, topic: str) -> bool:
        """Someone subscribed to exactly `topic` (needs log_subscriptions): a message published now reaches them."""
        return any(line.endswith(f" {topic}") for line in self.log().splitlines())
