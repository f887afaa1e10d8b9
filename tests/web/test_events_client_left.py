"""Leaving the Now page closes its event stream: a debug line, never an error with a traceback. Over real
HTTP, against the real server on the embedded resolver's stores."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
import structlog

from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.web import Live, WebConfig, WebServer
from facewatchd.web.auth import hash_password
from tests.web.test_security import PASSWORD, login


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """structlog at debug level for this test (an earlier test may have configured it at warning, which drops
    debug lines before capture_logs sees them), as it was afterwards."""
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**before)


async def test_a_client_that_leaves_the_now_page_is_a_debug_line(tmp_path: Path, caplog, debug_logs) -> None:
    caplog.set_level(logging.DEBUG)
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    live = Live()
    try:
        async with WebServer(WebConfig(port=0, password_hash=hash_password(PASSWORD)), backend.resolver, tmp_path,
                             live) as web:
            base = f"http://127.0.0.1:{web.port}"
            with structlog.testing.capture_logs() as logs:
                async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                    await login(browser, base)
                    response = await browser.get(f"{base}/events")
                    assert (await response.content.readline()).startswith(b"data: ")
                    response.close()  # the page is left: the connection goes away
                for _ in range(400):  # the stream writes again at the next change, and finds nobody there
                    live._touch()
                    if any(e["event"] == "web_events_client_left" for e in logs):
                        break
                    await asyncio.sleep(0.05)
            assert [e["log_level"] for e in logs if e["event"] == "web_events_client_left"] == ["debug"]
    finally:
        backend.close()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not errors, [(r.name, r.getMessage(), r.exc_info) for r in errors]
