"""Small asyncio helpers shared by the daemon and the services."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel until it ends: on Python 3.11 asyncio.wait_for (inside aiomqtt's publish) can swallow a
    cancellation that arrives together with the PUBACK, and the task would go on running."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
