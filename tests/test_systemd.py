"""Running under systemd: the real daemon speaks sd_notify on a real datagram socket, and the unit files in
deploy/systemd carry the settings we rely on (checked by `systemd-analyze verify` where it exists)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facewatchd.exit_codes import ExitCode
from facewatchd.systemd import SystemdNotifier
from tests.support.daemon import FIXTURES, ROOT

UNITS = ROOT / "deploy" / "systemd"


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; each datagram is one notification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def until(self, done: object, timeout: float = 60) -> list[str]:
        """Collect datagrams until `done(received)` holds; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not done(self.received):  # type: ignore[operator]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; received {self.received}")
            self.sock.settimeout(remaining)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.received

    def close(self) -> None:
        self.sock.close()


def lines(received: list[str], key: str) -> list[str]:
    return [line for datagram in received for line in datagram.splitlines() if line.startswith(key)]


@pytest.mark.timeout(120)
def test_daemon_notifies_ready_watchdog_status_and_stopping(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nformat = "json"\n'
                      f'[[cameras]]\nid = "door"\nsource = "{FIXTURES / "obama.jpg"}"\nloop = true\n'
                      'pace = "realtime"\nfps = 5\n')
    notify = NotifySocket(tmp_path / "notify.sock")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([sys.executable, "-m", "facewatchd", "run", "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the face is cached (pending) at once and answered a moment later: wait for a status that says both
        received = notify.until(lambda r: len(lines(r, "WATCHDOG=1")) >= 3 and "cache 1 faces, 0 pending" in "".join(r))
        assert received[0].splitlines()[0] == "READY=1"  # first, before any ping
        status = next(s for s in reversed(lines(received, "STATUS=")) if "0 pending" in s)
        assert "cache 1 faces" in status and "link online" in status, status
        proc.send_signal(signal.SIGTERM)
        notify.until(lambda r: lines(r, "STOPPING=1"))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["tracks"] == 1
    assert len(lines(received, "READY=1")) == 1


def test_notifier_is_a_no_op_without_systemd_and_ignores_another_process_watchdog(tmp_path: Path) -> None:
    import asyncio

    off = SystemdNotifier({})
    assert not off.enabled and not off.notify("READY=1")
    asyncio.run(asyncio.wait_for(off.run(lambda: "x"), 1))  # returns at once: no systemd, nothing to do

    notify = NotifySocket(tmp_path / "n.sock")
    try:
        other = SystemdNotifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
                                 "WATCHDOG_PID": str(os.getpid() + 1)})
        assert other.enabled and other.watchdog_s is None  # the watchdog is meant for another process
        mine = SystemdNotifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
                                "WATCHDOG_PID": str(os.getpid())})
        assert mine.watchdog_s == 1.0
        assert mine.notify("STATUS=ok", "WATCHDOG=1")
        assert notify.until(lambda r: r) == ["STATUS=ok\nWATCHDOG=1"]
        gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
        assert not gone.notify("READY=1")  # logged, never raised
    finally:
        notify.close()


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's ini dialect: keys may repeat (configparser refuses that), `#` starts a comment."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
             "DynamicUser": "yes", "ConfigurationDirectory": "facewatchd", "Restart": "on-failure",
             "Type": "notify", "SystemCallArchitectures": "native"}


@pytest.mark.parametrize("unit, command, state_dir", [("facewatchd.service", "run", "facewatchd"),
                                                      ("facewatchd-resolver.service", "resolver",
                                                       "facewatchd-resolver")])
def test_unit_files_carry_the_settings_we_rely_on(unit: str, command: str, state_dir: str) -> None:
    service = parse_unit(UNITS / unit)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], key
    config = "--config /etc/facewatchd/facewatchd.toml"
    assert service["ExecStart"] == [f"/opt/facewatchd/bin/facewatchd {command} {config}"]
    assert service["ExecStartPre"] == [f"/opt/facewatchd/bin/facewatchd check-config {config}"]
    assert service["StateDirectory"] == [state_dir]
    assert "@system-service" in service["SystemCallFilter"]
    assert float(service["WatchdogSec"][0].rstrip("s")) >= 10  # the daemon pings at half of it
    if command == "run":  # cameras: the video group and V4L2 devices, nothing else
        assert service["SupplementaryGroups"] == ["video"]
        assert service["DeviceAllow"] == ["char-video4linux rw"] and service["DevicePolicy"] == ["closed"]
        assert "PrivateDevices" not in service  # it would hide /dev/video*
    else:
        assert service["PrivateDevices"] == ["yes"] and "DeviceAllow" not in service
    assert parse_unit(UNITS / unit)["Install"]["WantedBy"] == ["multi-user.target"]


def verify(tmp_path: Path, drop_in: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`systemd-analyze verify` on copies of both units, facewatchd.service with the door's GPIO drop-in beside
    it (verify reads `<unit>.d/*.conf` from the unit's folder); `drop_in` replaces that file's text."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze: `make servers` installs Debian's systemd package"
    facewatchd = Path(sys.executable).parent / "facewatchd"
    assert facewatchd.exists(), "the facewatchd console script (pip install -e .)"
    units = []
    for unit in ("facewatchd.service", "facewatchd-resolver.service"):
        copy = tmp_path / unit  # verify checks that ExecStart exists: point it at this checkout's command
        copy.write_text((UNITS / unit).read_text().replace("/opt/facewatchd/bin/facewatchd", str(facewatchd)))
        units.append(str(copy))
    (tmp_path / "facewatchd.service.d").mkdir(exist_ok=True)
    (tmp_path / "facewatchd.service.d" / "door-gpio.conf").write_text(drop_in or DOOR_GPIO.read_text())
    proc = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    return proc, [line for line in (proc.stdout + proc.stderr).splitlines() if "facewatchd" in line]


DOOR_GPIO = UNITS / "facewatchd.service.d" / "door-gpio.conf"


def test_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    proc, ours = verify(tmp_path)
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_the_door_gpio_drop_in_opens_the_gpio_chips_and_nothing_else(tmp_path: Path) -> None:
    """The unit's DevicePolicy=closed allows V4L2 only; the drop-in adds the GPIO character devices (libgpiod
    opens /dev/gpiochipN) and the group that owns them, and verify reads it (a mistake in it is reported)."""
    service = parse_unit(DOOR_GPIO)["Service"]
    assert service == {"DeviceAllow": ["char-gpiochip rw"], "SupplementaryGroups": ["gpio"]}
    _, ours = verify(tmp_path, drop_in=DOOR_GPIO.read_text() + "DeviceAlow=char-gpiochip rw\n")
    assert any("door-gpio.conf" in line and "DeviceAlow" in line for line in ours), ours


def readme_exit_codes() -> dict[int, bool]:
    """The README's exit code table: code → whether it is in RestartPreventExitStatus."""
    section = (ROOT / "README.md").read_text().split("### Exit codes", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert all(row[3].strip() in {"yes", "no"} for row in rows), rows
    return {int(row[1]): row[3].strip() == "yes" for row in rows}


def test_the_readme_exit_codes_are_the_command_s_and_the_units_restart_policy() -> None:
    table = readme_exit_codes()
    assert table == {int(code): code.prevents_restart for code in ExitCode}
    for unit in ("facewatchd.service", "facewatchd-resolver.service"):
        [statuses] = parse_unit(UNITS / unit)["Service"]["RestartPreventExitStatus"]
        assert {int(s) for s in statuses.split()} == {code for code, prevents in table.items() if prevents}, unit


def test_the_watchdog_stops_while_the_daemon_is_half_alive(tmp_path: Path) -> None:
    """While a background task is dead the pings stop (systemd restarts the service after WatchdogSec)
    and STATUS says why; they come back when it is healthy again."""
    import asyncio

    notify = NotifySocket(tmp_path / "n.sock")
    broken: list[str | None] = ["background task(s) ended: uplink"]
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000",
                                    "WATCHDOG_PID": str(os.getpid())})

        async def main() -> None:
            task = asyncio.create_task(notifier.run(lambda: "fine", lambda: broken[0]))
            await asyncio.to_thread(notify.until, lambda r: len(lines(r, "STATUS=UNHEALTHY")) >= 3)
            broken[0] = None
            await asyncio.to_thread(notify.until, lambda r: len(lines(r, "WATCHDOG=1")) >= 2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        datagrams = notify.received
        unhealthy = [d for d in datagrams if "UNHEALTHY" in d]
        assert unhealthy and all("WATCHDOG=1" not in d for d in unhealthy)
        assert "uplink" in unhealthy[0]
    finally:
        notify.close()
