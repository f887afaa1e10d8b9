"""What both applications run the same way: stopping on SIGINT/SIGTERM, telling systemd they live, and
serving a running resolver to `facewatchd faces` (the control socket) and to people (the review page)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Callable

from facewatchd.control import ControlServer, socket_path
from facewatchd.resolver.core import Resolver
from facewatchd.systemd import SystemdNotifier
from facewatchd.web import Live, WebConfig, WebServer


def stop_on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread (tests)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)


async def notify_systemd(status: Callable[[], str], problem: Callable[[], str | None] = lambda: None) -> None:
    """READY, then the watchdog from this loop and STOPPING at the end; nothing when systemd did not start us."""
    await SystemdNotifier().run(status, problem)


async def serve_until_signal(status: Callable[[], str]) -> None:
    """Until SIGINT/SIGTERM, telling systemd (if it started us) that we run and are alive."""
    stop = asyncio.Event()
    stop_on_signals(stop.set)
    watchdog = asyncio.create_task(notify_systemd(status), name="systemd")
    try:
        await stop.wait()
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)


async def serve_resolver(stack: contextlib.AsyncExitStack, resolver: Resolver, data_dir: Path, web: WebConfig,
                         live: Live | None = None, door_audit: Path | None = None) -> WebServer | None:
    """The control socket (`facewatchd faces …` acts through the running process, so a change reaches it at
    once) and, when enabled, the review page; both close with `stack`."""
    await stack.enter_async_context(ControlServer(resolver, socket_path(data_dir)))
    if not web.enabled:
        return None
    return await stack.enter_async_context(WebServer(web, resolver, data_dir, live, door_audit))
