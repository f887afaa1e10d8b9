"""What the test servers (mosquitto, Home Assistant) share: a log file to read, and start/stop as a context."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self


class ServerProcess:
    log_file: Path

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
