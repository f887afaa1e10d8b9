"""A command whose reader went away (`facewatchd faces list | head -3`) exits quietly, as Python's docs
recommend (https://docs.python.org/3/library/signal.html#note-on-sigpipe): no BrokenPipeError traceback,
and no second one when the interpreter flushes stdout at exit."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command killed by a closed pipe


@contextmanager
def exit_quietly_on_closed_pipe() -> Iterator[None]:
    try:
        yield
        sys.stdout.flush()  # inside the guard: what is still buffered may meet the closed pipe too
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at /dev/null so that flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_CLOSED_PIPE) from None
