"""The review page: people look at faces and name them, merge, move or reject faces, forget persons, see
who is in view now and what the door decided. Served by the daemon (embedded resolver) and by the
on-prem resolver service, on the same event loop, through aiohttp.web and Jinja2 templates.

Every change goes through the running resolver (as the control socket's do), so a running daemon names
the person in its next frames; every change is logged with who made it (`<state_dir>/changes.jsonl`).
Authentication: see `auth.py`. Lists are paginated in SQL, so 10,000 persons stay fast.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import structlog

from facewatchd.state import ChangeLog, required_text
from facewatchd.web.auth import COOKIE, Session, Sessions, check_password
from facewatchd.web.config import WebConfig
from facewatchd.web.live import Live, Sighting
from facewatchd.web.security import AllowedHosts, LoginThrottle, local_path, security_middleware

if TYPE_CHECKING:
    from facewatchd.resolver.core import Resolver

log = structlog.get_logger("facewatchd.web")

__all__ = ["Live", "Sighting", "WebConfig", "WebServer", "door_attack_crop", "door_audit_path"]

HERE = Path(__file__).parent
PAGE_SIZE = 48
CROPS_SHOWN = 4


class WebServer:
    """`async with WebServer(config, resolver, state_dir, live, audit_log):` serves the page."""

    def __init__(self, config: WebConfig, resolver: "Resolver", state_dir: Path, live: Live | None = None,
                 door_audit: Path | None = None) -> None:
        self.config = config
        self.resolver = resolver
        self.names = resolver.names  # the resolver's own adapters: local (SQLite, files) or AWS (DynamoDB, S3)
        self.crops = resolver.crops
        self.state_dir = state_dir
        self.live = live
        self.door_audit = door_audit
        self.hosts = AllowedHosts(config.host, config.hostnames)
        self.sessions = Sessions(config.session_hours * 3600)
        self.throttle = LoginThrottle()
        self._checks = asyncio.Semaphore(2)
        self.changes = ChangeLog(state_dir)
        self.port = 0
        self._runner: Any = None
        self._stored_hash = config.stored_hash()
        self.session_key: Any = None  # aiohttp's typed request key, made with the app

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> "WebServer":
        from aiohttp import web

        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        context = None
        if self.config.tls_cert_file:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.config.tls_cert_file), str(self.config.tls_key_file))
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        scheme = "https" if context else "http"
        log.info("web_listening", url=f"{scheme}://{self.config.host}:{self.port}/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()

    def app(self) -> Any:
        import jinja2
        from aiohttp import web

        self.session_key = web.RequestKey("session", Session)
        self._templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
        self._templates.filters["when"] = _when

        @web.middleware
        async def security(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            return await security_middleware(self, handler)(request)

        app = web.Application(middlewares=[security], client_max_size=64 * 1024)
        get, post = web.get, web.post
        app.add_routes([
            get("/login", self.login_page), post("/login", self.login), post("/logout", self.logout),
            get("/", self.home),
            get("/review", self.review), get("/people", self.people), get("/people/{person_id}", self.person),
            get("/people/{person_id}/forget", self.forget_page),
            get("/now", self.now), get("/events", self.events), get("/audit", self.audit),
            get("/crops/{face_id}.jpg", self.crop),
            get("/audit/attacks/{name}", self.attack_crop),
            post("/people/{person_id}/label", self._change(self._label)),
            post("/people/{person_id}/merge", self._change(self._merge)),
            post("/people/{person_id}/dismiss", self._change(self._dismiss)),
            post("/people/{person_id}/forget", self._change(self._forget)),
            post("/faces/{face_id}/move", self._change(self._move)),
            post("/faces/{face_id}/reject", self._change(self._reject)),
        ])
        app.router.add_static("/static", HERE / "static", append_version=True)
        return app

    # -- security -------------------------------------------------------------------------------
    def _secure(self) -> bool:
        return bool(self.config.tls_cert_file)

    def render(self, name: str, request: Any, context: dict[str, Any], status: int = 200) -> Any:
        from aiohttp import web

        session = request.get(self.session_key)
        page = self._templates.get_template(name).render(
            user=session.user if session else None, csrf=session.csrf if session else "",
            door=self.door_audit is not None, live=self.live is not None, path=request.path, **context)
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")

    async def home(self, request: Any) -> Any:
        from aiohttp import web

        raise web.HTTPFound("/review")

    async def login_page(self, request: Any) -> Any:
        return self.render("login.html", request, {"error": None, "next": _next(request)})

    async def login(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        user, password = str(form.get("user", "")), str(form.get("password", ""))
        remote = str(request.remote)
        if not self.throttle.attempt(remote):
            raise web.HTTPTooManyRequests(text="too many failed logins: wait a minute")
        async with self._checks:  # scrypt runs off the event loop (cameras and the door share it), two at a time
            ok = secrets.compare_digest(user.encode(), self.config.user.encode()) & await asyncio.to_thread(check_password, password,
                                                                               self._stored_hash)
        if not ok:
            log.warning("web_login_failed", user=user[:64], remote=request.remote)
            return self.render("login.html", request, {"error": "Wrong user or password.",
                                                                           "next": _next(request)}, status=401)
        self.throttle.succeeded(remote)
        response = web.Response(status=303, headers={"Location": _next(request)})
        response.set_cookie(COOKIE, self.sessions.open(user), httponly=True, samesite="Strict",
                            secure=self._secure(), max_age=int(self.config.session_hours * 3600), path="/")
        log.info("web_login", user=user, remote=request.remote)
        return response

    async def logout(self, request: Any) -> Any:
        from aiohttp import web

        self.sessions.close(request.cookies.get(COOKIE))
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- pages ----------------------------------------------------------------------------------
    async def review(self, request: Any) -> Any:
        page = _page(request)
        persons, total = await self.names.page(page * PAGE_SIZE, PAGE_SIZE, unnamed_only=True)
        suggestions = {}
        for p in persons:
            if p.possibly and p.possibly not in suggestions:
                suggestions[p.possibly] = await self.names.get(p.possibly)
        return self.render("review.html", request, {
            "persons": persons, "suggestions": suggestions, "page": page, "pages": _pages(total), "total": total,
            "sightings": self._sightings(persons), "crops_shown": CROPS_SHOWN})

    async def people(self, request: Any) -> Any:
        page = _page(request)
        persons, total = await self.names.page(page * PAGE_SIZE, PAGE_SIZE)
        return self.render("people.html", request, {
            "persons": persons, "page": page, "pages": _pages(total), "total": total,
            "sightings": self._sightings(persons), "crops_shown": CROPS_SHOWN})

    async def person(self, request: Any) -> Any:
        from aiohttp import web

        person = await self.names.get(request.match_info["person_id"])
        if person is None:
            raise web.HTTPNotFound(text="no such person")
        possibly = await self.names.get(person.possibly) if person.possibly else None
        return self.render("person.html", request, {
            "person": person, "possibly": possibly, "sightings": self._sightings([person]).get(person.person_id, [])})

    async def forget_page(self, request: Any) -> Any:
        from aiohttp import web

        person = await self.names.get(request.match_info["person_id"])
        if person is None:
            raise web.HTTPNotFound(text="no such person")
        return self.render("forget.html", request, {"person": person})

    async def now(self, request: Any) -> Any:
        return self.render("now.html", request, {
            "cameras": self.live.snapshot() if self.live else {}})

    async def events(self, request: Any) -> Any:
        """Server-sent events: the "now" snapshot each time it changes (and every 15 s, to keep it open)."""
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        cookie = request.cookies.get(COOKIE)
        while self.sessions.get(cookie) is not None:  # ends with the session (a logout, an expiry)
            data = json.dumps(self.live.snapshot() if self.live else {})
            await response.write(f"data: {data}\n\n".encode())
            if self.live is None:
                await asyncio.sleep(15)
                continue
            try:
                await asyncio.wait_for(self.live.changed.wait(), 15)
            except TimeoutError:
                pass
            await asyncio.sleep(0.2)  # at most five updates a second
        return response

    async def audit(self, request: Any) -> Any:
        records: list[dict[str, Any]] = []
        damaged = 0
        if self.door_audit is not None and self.door_audit.exists():
            lines = await asyncio.to_thread(_tail, self.door_audit, 200)
            for line in reversed(lines):
                if not line.strip():
                    continue
                try:  # a line torn by a kill -9 or a full disk during an append: skipped and counted
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    records.append(record)
                else:
                    damaged += 1
        return self.render("audit.html", request, {"records": records, "damaged": damaged})

    async def attack_crop(self, request: Any) -> Any:
        """The face crop the door kept of a presentation attack (a photo or a screen held up)."""
        from aiohttp import web

        path = door_attack_crop(self.door_audit, request.match_info["name"]) if self.door_audit else None
        try:
            jpeg = await asyncio.to_thread(path.read_bytes) if path else None
        except OSError:
            jpeg = None
        if jpeg is None:
            raise web.HTTPNotFound(text="no such crop")
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    async def crop(self, request: Any) -> Any:
        from aiohttp import web

        face = await self.names.face(request.match_info["face_id"])
        try:
            jpeg = await self.crops.read(face.crop_key) if face and face.crop_key else None
        except KeyError:
            jpeg = None
        if jpeg is None:
            raise web.HTTPNotFound(text="no such crop")
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    def _sightings(self, persons: list[Any]) -> dict[str, list[Sighting]]:
        if self.live is None:
            return {}
        return {p.person_id: list(self.live.seen.get(p.person_id, ())) for p in persons}

    # -- changes --------------------------------------------------------------------------------
    def _change(self, act: Callable[[Any, Any], Awaitable[tuple[str, dict[str, Any], str]]]) -> Any:
        """A POST that changes something: run it through the resolver, log who did it, go back."""
        async def handle(request: Any) -> Any:
            from aiohttp import web

            form = await request.post()
            try:
                what, detail, back = await act(request, form)
            except KeyError as e:
                raise web.HTTPNotFound(text=f"no such person or face {e.args[0]!r}") from None
            except ValueError as e:
                raise web.HTTPBadRequest(text=str(e)) from None
            await self.changes.record(request[self.session_key].user, what, remote=request.remote, **detail)
            raise web.HTTPSeeOther(back)

        return handle

    async def _label(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        pid, name = request.match_info["person_id"], _text(form, "name")
        await self.resolver.label(pid, name)
        return "label", {"person_id": pid, "name": name}, local_path(str(form.get("back") or ""), f"/people/{pid}")

    async def _merge(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        keep, gone = request.match_info["person_id"], _text(form, "gone")
        await self.resolver.merge(keep, gone)
        return "merge", {"keep": keep, "gone": gone}, local_path(str(form.get("back") or ""), f"/people/{keep}")

    async def _dismiss(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        pid = request.match_info["person_id"]
        await self.names.set_reviewed(pid)
        return "dismiss", {"person_id": pid}, "/review"

    async def _forget(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        pid = request.match_info["person_id"]
        person = await self.resolver.forget(pid)
        return "forget", {"person_id": pid, "faces": len(person.faces), "things": person.things}, "/people"

    async def _move(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        face_id, pid = request.match_info["face_id"], _text(form, "person_id")
        await self.resolver.move(face_id, pid)
        return "move", {"face_id": face_id, "person_id": pid}, f"/people/{pid}"

    async def _reject(self, request: Any, form: Any) -> tuple[str, dict[str, Any], str]:
        face_id = request.match_info["face_id"]
        person = await self.resolver.reject(face_id)
        return "reject", {"face_id": face_id, "person_id": person.person_id}, f"/people/{person.person_id}"


def door_audit_path(config: Any) -> Path | None:
    """The door plugin's audit log, when the door plugin is configured."""
    door = config.plugins.get("door")
    if door is None:
        return None
    return Path(door["audit_log"]) if door.get("audit_log") else config.device.state_dir / "door-audit.jsonl"


def door_attack_crop(audit_log: Path, name: str) -> Path | None:
    """A crop the door plugin kept of a presentation attack: `door-attacks/<hex>.jpg` beside its audit log
    (plugins/door: attack_crops_dir); None for any other name, so no path can leave that folder."""
    if len(name) != 36 or not name.endswith(".jpg") or any(c not in "0123456789abcdef" for c in name[:32]):
        return None
    return audit_log.parent / "door-attacks" / name


def _next(request: Any) -> str:
    return local_path(str(request.query.get("next", "/review")), "/review")


def _page(request: Any) -> int:
    try:
        return max(0, int(request.query.get("page", "0")))
    except ValueError:
        return 0


def _pages(total: int) -> int:
    return max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)


def _text(form: Any, key: str) -> str:
    return required_text(form.get(key), key)


def _tail(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:  # a torn multi-byte character is a damaged line
        return list(deque(f, maxlen=n))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"
