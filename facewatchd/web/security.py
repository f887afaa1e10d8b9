"""The review page's defences, apart from its pages: who may try a password how often, which Host names are
served, and the checks every request passes (session, CSRF, other sites) with the headers every answer gets."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

import structlog

from facewatchd.web.auth import COOKIE

if TYPE_CHECKING:
    from facewatchd.web.site import Site

log = structlog.get_logger("facewatchd.web")


@dataclass
class LoginThrottle:
    """Login attempts per client address: after `limit` within `window_s`, that address waits. An attempt
    counts when it starts, before its password is checked, so simultaneous guesses cannot all be checked
    while the first ones are still running; a login that succeeds takes its attempt back."""

    limit: int = 5
    window_s: float = 60.0
    _attempts: dict[str, deque[float]] = field(default_factory=dict)

    def attempt(self, remote: str) -> bool:
        """Count an attempt; False (nothing counted) while the address must wait."""
        recent = self._attempts.setdefault(remote, deque(maxlen=self.limit))
        if len(recent) >= self.limit and time.monotonic() - recent[0] < self.window_s:
            return False
        recent.append(time.monotonic())
        if len(self._attempts) > 10_000:  # a flood of addresses: forget the oldest
            self._attempts.pop(next(iter(self._attempts)))
        return True

    def succeeded(self, remote: str) -> None:
        recent = self._attempts.get(remote)
        if recent:
            recent.pop()


class AllowedHosts:
    """The names a request may give in its Host header: IP addresses, localhost, this machine's name, the
    configured host and `[web] hostnames`. A DNS-rebinding page names its own site, and is refused."""

    def __init__(self, host: str, hostnames: list[str]) -> None:
        machine = socket.gethostname().casefold()
        self.names = {"localhost", machine, f"{machine}.local", socket.getfqdn().casefold(), host.casefold(),
                      *(h.casefold().rstrip(".") for h in hostnames)}

    def allow(self, host: str) -> bool:
        if host.startswith("["):  # [::1]:8750
            name = host[1:].split("]", 1)[0]
        else:  # door.local:8750, or a bare name or IPv6 address
            name = host.split(":", 1)[0] if host.count(":") == 1 else host
        name = name.rstrip(".").casefold()
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in self.names


def security_middleware(server: "Site", handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Any]:
    async def check(request: Any) -> Any:
        from aiohttp import web

        path = request.path
        if not server.hosts.allow(request.host):  # DNS rebinding: another site's name pointed at this address
            log.warning("web_host_refused", host=request.host[:200], remote=request.remote)
            return harden(web.Response(status=421, text="this page is not served under that name: add it to "
                                        "[web] hostnames"))
        if path.startswith("/static/"):
            return harden(await handler(request))
        if request.method == "POST":
            # A form posted from another site carries its Origin (or Sec-Fetch-Site): refused outright.
            origin = request.headers.get("Origin")
            fetch_site = request.headers.get("Sec-Fetch-Site")
            if (origin and origin != f"{request.scheme}://{request.host}") or fetch_site == "cross-site":
                log.warning("web_cross_site_refused", path=path, origin=origin, remote=request.remote)
                raise web.HTTPForbidden(text="cross-site request refused")
        if path == "/login":
            return harden(await handler(request))
        session = server.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and path != "/events":
                raise web.HTTPSeeOther(f"/login?next={quote(path)}")
            raise web.HTTPUnauthorized(text="log in first")
        request[server.session_key] = session
        if request.method == "POST":
            form = await request.post()
            if not secrets.compare_digest(str(form.get("csrf", "")), session.csrf):
                log.warning("web_csrf_refused", path=path, user=session.user, remote=request.remote)
                raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
        return harden(await handler(request))

    return check


def harden(response: Any) -> Any:
    """No framing (clickjacking), scripts and styles from this site only, no referrer to other sites."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self'; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")  # a crop is an image, never a script
    return response


def local_path(target: str, default: str) -> str:
    """`target` if it is a path on this site, else `default`: never a way to send someone elsewhere
    (`//host`, `/\\host`, a scheme, control characters that browsers drop)."""
    parts = urlsplit(target)
    if (not target.startswith("/") or parts.scheme or parts.netloc or "\\" in target
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target) or target.startswith("//")):
        return default
    return target
