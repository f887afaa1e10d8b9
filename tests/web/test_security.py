"""Who may change a name on the review page: nobody without logging in, nobody with a wrong password,
no change without the session's CSRF token, no form posted from another site. Over real HTTP, against
the real server on the embedded resolver's stores."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.web import WebConfig, WebServer
from facewatchd.web.auth import COOKIE, hash_password
from tests.support.daemon import FIXTURES

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[WebServer, str]]:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    await backend.resolver.enroll("Somebody", [FaceQuery(new_face_id(), "", "enroll", "enroll",
                                                         (FIXTURES / "obama.jpg").read_bytes()[:4000],
                                                         _unit(), time.time())])
    config = WebConfig(port=0, password_hash=hash_password(PASSWORD))
    async with WebServer(config, backend.resolver, tmp_path) as web:
        [person] = await backend.resolver.persons()
        yield web, person.person_id
    backend.close()


def _unit():  # type: ignore[no-untyped-def]
    import numpy as np

    v = np.ones(128, np.float32)
    return v / np.linalg.norm(v)


async def login(session: aiohttp.ClientSession, base: str, password: str = PASSWORD) -> tuple[int, str]:
    async with session.post(f"{base}/login", data={"user": "admin", "password": password},
                            allow_redirects=False) as r:
        return r.status, r.headers.get("Set-Cookie", "")


async def csrf_of(session: aiohttp.ClientSession, base: str, person_id: str) -> str:
    async with session.get(f"{base}/people/{person_id}") as r:
        page = await r.text()
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def test_the_page_refuses_strangers_wrong_passwords_missing_csrf_and_other_sites(server, tmp_path):
    web, person_id = server
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{base}/people", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        async with anonymous.get(f"{base}/crops/x.jpg", allow_redirects=False) as r:
            assert r.status == 303  # even the crops need a session
        async with anonymous.post(f"{base}/people/{person_id}/label", data={"name": "Mallory"}) as r:
            assert r.status == 401
        status, cookie = await login(anonymous, base, "wrong password")
        assert status == 401 and COOKIE not in cookie

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:  # an IP host
        status, cookie = await login(browser, base)
        assert status == 303 and f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        csrf = await csrf_of(browser, base, person_id)
        label = f"{base}/people/{person_id}/label"
        async with browser.post(label, data={"name": "Mallory"}, allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token
        async with browser.post(label, data={"name": "Mallory", "csrf": "forged"}, allow_redirects=False) as r:
            assert r.status == 403
        async with browser.post(label, data={"name": "Mallory", "csrf": csrf},
                                headers={"Origin": "https://evil.example"}, allow_redirects=False) as r:
            assert r.status == 403  # a form on another site, posting with the user's cookie
        async with browser.post(label, data={"name": "Mallory", "csrf": csrf},
                                headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False) as r:
            assert r.status == 403
        assert (await web.names.get(person_id)).name == "Somebody"  # none of that changed a thing

        async with browser.post(label, data={"name": "Alice", "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
        assert (await web.names.get(person_id)).name == "Alice"
        [change] = [json.loads(line) for line in (tmp_path / "changes.jsonl").read_text().splitlines()]
        assert (change["user"], change["change"], change["name"]) == ("admin", "label", "Alice")

        async with browser.post(f"{base}/logout", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
        async with browser.post(label, data={"name": "Bob", "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 401  # the session is gone with the logout


def test_without_a_password_there_is_no_page() -> None:
    assert not WebConfig().enabled
    with pytest.raises(ValueError, match="set one of them"):
        WebConfig(password_hash="scrypt$x$y", password_file=Path("/x"))


async def test_no_redirect_leaves_the_site_and_guessing_is_throttled(server):
    web, _ = server
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{base}/login") as r:
            assert r.headers["X-Frame-Options"] == "DENY"  # the login page cannot be framed either
        for evil in ("//evil.example/", "/%5Cevil.example", "/%09/evil.example", "https://evil.example/"):
            async with browser.post(f"{base}/login?next={evil}", data={"user": "admin", "password": PASSWORD},
                                    allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/review", (evil, r.headers["Location"])
        async with aiohttp.ClientSession() as guesser:
            statuses = []
            for _ in range(7):
                async with guesser.post(f"{base}/login", data={"user": "admin", "password": "guess"},
                                        allow_redirects=False) as r:
                    statuses.append(r.status)
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]  # five tries, then wait a minute


async def test_simultaneous_guesses_are_counted_as_they_start(server):
    """Sixty wrong passwords at once from one address: only the first five are checked (scrypt), the rest
    wait, as five guesses one after the other would."""
    import asyncio

    web, _ = server
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession() as guesser:
        async def guess() -> int:
            async with guesser.post(f"{base}/login", data={"user": "admin", "password": "guess"},
                                    allow_redirects=False) as r:
                return r.status

        statuses = await asyncio.gather(*(guess() for _ in range(60)))
    assert statuses.count(401) == 5 and statuses.count(429) == 55, sorted(statuses)


async def test_a_torn_audit_line_is_skipped_and_counted(tmp_path: Path) -> None:
    """kill -9 or a full disk during an append leaves half a line: the door page still shows the rest."""
    audit_log = tmp_path / "door-audit.jsonl"
    good = {"ts": "2026-01-01T00:00:00+00:00", "decision": "grant", "reason": "allowlisted", "name": "Ann"}
    audit_log.write_bytes((json.dumps(good) + "\n").encode() + b'{"ts": "2026-01-01T00:00:01", "decis\xc3')
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    config = WebConfig(port=0, password_hash=hash_password(PASSWORD))
    try:
        async with WebServer(config, backend.resolver, tmp_path, door_audit=audit_log) as web:
            base = f"http://127.0.0.1:{web.port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                status, _ = await login(browser, base)
                assert status == 303
                async with browser.get(f"{base}/audit") as r:
                    page = await r.text()
                    assert r.status == 200, page
    finally:
        backend.close()
    assert "allowlisted" in page and "1 damaged line of the audit log skipped" in page


async def test_a_request_for_another_sites_name_is_refused(server, tmp_path):
    """DNS rebinding: a page on evil.example makes its name resolve to this address and calls it; the Host
    it sends is evil.example. IP addresses, localhost, this machine's name and [web] hostnames are served."""
    import socket

    web, _ = server
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession() as session:
        for host, served in [("evil.example", False), (f"evil.example:{web.port}", False),
                             (f"127.0.0.1:{web.port}", True), (f"[::1]:{web.port}", True), ("localhost", True),
                             (socket.gethostname(), True)]:
            async with session.get(f"{base}/login", headers={"Host": host}, allow_redirects=False) as r:
                assert (r.status == 200) == served, (host, r.status)
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with session.post(f"{base}/login", data={"user": "admin", "password": PASSWORD},
                                headers={"Host": "evil.example"}, allow_redirects=False) as r:
            assert r.status == 421  # no login through the other name either
    named = WebConfig(port=0, password_hash=hash_password(PASSWORD), hostnames=["door.example.net"])
    async with WebServer(named, web.resolver, tmp_path) as other:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{other.port}/login",
                                   headers={"Host": "door.example.net:443"}) as r:
                assert r.status == 200


async def test_the_new_routes_need_a_session_and_their_posts_the_csrf_token(server, monkeypatch):
    """The search as you type, the bulk dismiss and undo pass the same checks as every page; an undo is the
    session's own, works once, and only for a while."""
    import facewatchd.web.flash as flash

    web, person_id = server
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{base}/api/people?q=Some", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        for path in ("/undo", "/review/dismiss"):
            async with anonymous.post(f"{base}{path}", data={"undo": "x"}, allow_redirects=False) as r:
                assert r.status == 401
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await login(browser, base)
        await login(other, base)
        csrf, other_csrf = await csrf_of(browser, base, person_id), await csrf_of(other, base, person_id)
        async with browser.get(f"{base}/api/people?q=some") as r:
            assert [p["person_id"] for p in await r.json()] == [person_id]
        async with browser.post(f"{base}/people/{person_id}/label", data={"name": "Alice", "csrf": csrf}) as r:
            token = (await r.text()).split('name="undo" value="', 1)[1].split('"', 1)[0]
        for data in ({"undo": token}, {"undo": token, "csrf": "forged"}):
            async with browser.post(f"{base}/undo", data=data, allow_redirects=False) as r:
                assert r.status == 403  # no undo without the session's CSRF token
        async with other.post(f"{base}/undo", data={"undo": token, "csrf": other_csrf}) as r:
            assert "can no longer be undone" in await r.text()  # another session's undo
        assert (await web.names.get(person_id)).name == "Alice"
        async with browser.post(f"{base}/undo", data={"undo": token, "csrf": csrf}) as r:
            assert "Naming Alice undone: named Somebody again." in await r.text()
        async with browser.post(f"{base}/undo", data={"undo": token, "csrf": csrf}) as r:
            assert "can no longer be undone" in await r.text()  # once
        monkeypatch.setattr(flash, "UNDO_S", 0.0)  # offered now, gone at once
        async with browser.post(f"{base}/people/{person_id}/label", data={"name": "Bob", "csrf": csrf}) as r:
            token = (await r.text()).split('name="undo" value="', 1)[1].split('"', 1)[0]
        async with browser.post(f"{base}/undo", data={"undo": token, "csrf": csrf}) as r:
            assert "can no longer be undone" in await r.text()
        assert (await web.names.get(person_id)).name == "Bob"
