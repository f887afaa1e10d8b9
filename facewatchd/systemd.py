"""systemd integration, sd_notify(3): READY=1 once running, WATCHDOG=1 from the event loop at half of
WATCHDOG_USEC (a stuck loop stops pinging and systemd restarts the unit), STATUS= with a short health
line, STOPPING=1 at shutdown.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named by $NOTIFY_SOCKET, so it
is spoken directly here (no dependency). Everything is a no-op when NOTIFY_SOCKET is unset, that is
when systemd did not start us.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable, Mapping

import structlog

log = structlog.get_logger("facewatchd.systemd")

STATUS_EVERY_S = 10.0  # STATUS= refresh when systemd asked for no watchdog


def _address(value: str) -> str | None:
    if not value:
        return None
    return "\0" + value[1:] if value.startswith("@") else value  # "@name": the abstract namespace


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC in seconds, if the watchdog is on and meant for this process."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0"))
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_interval(env) if self._address else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one notification (e.g. "READY=1", "STATUS=ok"); False if not sent. Never blocks."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(assignments).encode(), self._address)
            return True
        except OSError as e:  # systemd gone or its queue full: the next ping tries again
            log.warning("systemd_notify_failed", error=str(e), notify_socket=self._address)
            return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def run(self, status: Callable[[], str], problem: Callable[[], str | None] = lambda: None) -> None:
        """READY=1, then WATCHDOG=1 and STATUS= until cancelled, then STOPPING=1. Run it as a task of the
        loop it vouches for: if that loop stops turning, the pings stop; and while `problem()` says what is
        broken (a dead background task), they stop too, so systemd restarts a half-alive process."""
        if not self.enabled:
            return
        self.notify("READY=1", f"STATUS={_status(status)}")
        log.info("systemd_ready", watchdog_s=self.watchdog_s)
        try:
            while True:
                await asyncio.sleep(self.watchdog_s or STATUS_EVERY_S)
                broken = problem()
                lines = [f"STATUS={'UNHEALTHY: ' + broken if broken else _status(status)}"]
                self.notify(*(["WATCHDOG=1"] + lines if self.watchdog_s and not broken else lines))
        finally:
            self.notify("STOPPING=1", "STATUS=stopping")
            self.close()


def _status(status: Callable[[], str]) -> str:
    try:
        return status().replace("\n", " ")
    except Exception as e:  # a health line must never stop the watchdog
        return f"status unavailable: {type(e).__name__}"
