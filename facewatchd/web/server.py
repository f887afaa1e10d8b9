"""The review page's server: its lifecycle, its aiohttp app and middlewares, login and logout. The pages are
in `pages.py`, the changes in `actions.py`, and what they need of the server in `site.py`."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import structlog

from facewatchd.state import ChangeLog
from facewatchd.web.auth import COOKIE, Session, Sessions, check_password
from facewatchd.web.config import WebConfig
from facewatchd.web.actions import Actions
from facewatchd.web.live import Live
from facewatchd.web.pages import Pages
from facewatchd.web.security import AllowedHosts, LoginThrottle, harden, local_path, security_middleware

if TYPE_CHECKING:
    from facewatchd.resolver.core import Resolver

log = structlog.get_logger("facewatchd.web")

HERE = Path(__file__).parent
PLAIN = ("/crops/", "/audit/attacks/", "/api/", "/events", "/static/")  # not pages: their errors stay plain text


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
        self.pages = Pages(self)
        self.actions = Actions(self)

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
        async def errors(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            try:
                return await handler(request)
            except web.HTTPException as e:  # a page's error is a page: styled, with a way back
                if e.status < 400 or request.path.startswith(PLAIN):
                    raise
                return harden(self.render("error.html", request, {"status": e.status, "reason": e.reason,
                                                                  "message": e.text}, status=e.status))

        @web.middleware
        async def security(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            return await security_middleware(self, handler)(request)

        app = web.Application(middlewares=[errors, security], client_max_size=64 * 1024)
        get, post, pages, act = web.get, web.post, self.pages, self.actions
        change = act.change
        app.add_routes([
            get("/login", self.login_page), post("/login", self.login), post("/logout", self.logout),
            get("/", self.home),
            get("/review", pages.review), get("/people", pages.people), get("/people/{person_id}", pages.person),
            get("/people/{person_id}/forget", pages.forget_page), get("/api/people", pages.pick),
            get("/now", pages.now), get("/events", pages.events), get("/audit", pages.audit),
            get("/crops/{face_id}.jpg", pages.crop),
            get("/audit/attacks/{name}", pages.attack_crop),
            post("/people/{person_id}/label", change(act.label, "label-{person_id}")),
            post("/people/{person_id}/merge", change(act.merge, "merge-{person_id}")),
            post("/people/{person_id}/dismiss", change(act.dismiss, "dismiss-{person_id}")),
            post("/people/{person_id}/forget", change(act.forget, "forget-{person_id}")),
            post("/faces/{face_id}/move", change(act.move, "move-{face_id}")),
            post("/faces/{face_id}/reject", change(act.reject, "reject-{face_id}")),
            post("/review/dismiss", change(act.dismiss_many, "dismiss-many")),
            post("/undo", change(act.undo, "undo")),
        ])
        app.router.add_static("/static", HERE / "static", append_version=True)
        return app

    # -- security -------------------------------------------------------------------------------
    def _secure(self) -> bool:
        return bool(self.config.tls_cert_file)

    def render(self, name: str, request: Any, context: dict[str, Any], status: int = 200) -> Any:
        from aiohttp import web

        session = request.get(self.session_key)
        flash = self.actions.flashes.take(request.cookies.get(COOKIE, "")) if session else None
        page = self._templates.get_template(name).render(
            user=session.user if session else None, csrf=session.csrf if session else "", flash=flash,
            door=self.door_audit is not None, live=self.live is not None, path=request.path,
            here=request.path_qs, **context)
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
            return self.render("login.html", request, {"error": "Too many failed logins from here: wait a minute, "
                                                       "then try again.", "next": _next(request)}, status=429)
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

def _next(request: Any) -> str:
    return local_path(str(request.query.get("next", "/review")), "/review")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"
