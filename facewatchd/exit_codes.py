"""The `facewatchd` command's exit statuses, one table for the README and the systemd units: a status that
restarting cannot mend is in the units' `RestartPreventExitStatus` (tests/test_systemd.py keeps them in step)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the command could not do what was asked (a refused password, no such person, a skipped photo)
    CONFIG = 2  # a config error, a bad command line, or a missing or damaged model file
    NO_CAMERAS = 66  # `run` with no [[cameras]] table: nothing to watch (sysexits' EX_NOINPUT)
    CAMERA_NEVER_UP = 69  # `run`: a camera gave no frame (a file that cannot be read, a live source down since start)
    STATE = 78  # damaged state: the message names the file (sysexits' EX_CONFIG)
    INTERRUPTED = 130  # Ctrl-C

    @property
    def prevents_restart(self) -> bool:
        """In the units' RestartPreventExitStatus: a restart cannot mend a config or damaged state (a camera may
        come up, so 69 is restarted)."""
        return self in {ExitCode.CONFIG, ExitCode.NO_CAMERAS, ExitCode.STATE}
