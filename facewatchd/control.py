"""The local control socket: how `facewatchd faces …` reaches a running daemon or resolver service.

A process that owns a resolver (the daemon with the embedded resolver, `facewatchd resolver`) serves its
operator actions as JSON over HTTP on a Unix socket in its state directory (`control.sock`). The CLI uses
it whenever it answers, so a label or a forget goes through the one resolver that is running: its
in-memory collection follows, and the shadow delta reaches the devices (the embedded daemon's own
cache included) at once. With no process running, the CLI works on the stores directly, as before.

Authentication is the file system's: the socket is 0600 in a 0700 directory, so only the user the
service runs as (and root) can connect. The web page and its API for people are another matter
(passwords, sessions, CSRF): this socket is for the machine's own operator.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from facewatchd.messages import FaceQuery, MessageError
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.ports import Enrollment, Match, NameTaken, Person
from facewatchd.state import ChangeLog, private_dir, required_text

log = structlog.get_logger("facewatchd.control")

Done = tuple[Person | Enrollment, dict[str, Any]]  # what an action did, and its change log detail

SOCKET_NAME = "control.sock"
MAX_REQUEST_BYTES = 8 * 1024 * 1024  # an enrolment with a few dozen crops


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def text(body: dict[str, Any], key: str) -> str:
    return required_text(body.get(key), key)


class ControlServer:
    """`async with ControlServer(resolver, path):` serves the operator actions on the Unix socket `path`."""

    def __init__(self, resolver: Resolver, path: Path) -> None:
        self.resolver = resolver
        self.path = path
        self.changes = ChangeLog(path.parent)  # shared with the review page: one log of every change
        self._runner: Any = None

    async def __aenter__(self) -> "ControlServer":
        from aiohttp import web

        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([
            web.get("/persons", self._persons),
            web.post("/persons/{person_id}/label", self._action("label", self._label)),
            web.post("/persons/{person_id}/forget", self._action("forget", self._forget)),
            web.post("/persons/{person_id}/merge", self._action("merge", self._merge)),
            web.post("/faces/{face_id}/move", self._action("move", self._move)),
            web.post("/faces/{face_id}/reject", self._action("reject", self._reject)),
            web.post("/enroll", self._action("enroll", self._enroll)),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.path.unlink(missing_ok=True)  # a socket left by a killed process (the state lock is ours now)
        # Only this user may connect: the socket lives in the private state directory (0700), and is made 0600
        # once bound. The process-wide umask is never changed (another thread's files would get it too).
        private_dir(self.path.parent)
        site = web.UnixSite(self._runner, str(self.path))
        await site.start()
        os.chmod(self.path, 0o600)
        log.info("control_socket_listening", path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.path.unlink(missing_ok=True)

    async def _persons(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response([dataclasses.asdict(p) for p in await self.resolver.persons()])

    # Each action returns what it did and the change log's detail: the same change names and keys as the
    # review page's (web/actions.py), so one reader reads both.
    async def _label(self, body: dict[str, Any], match: Any) -> Done:
        person_id, name = match["person_id"], text(body, "name")
        return await self.resolver.label(person_id, name), {"person_id": person_id, "name": name}

    async def _forget(self, body: dict[str, Any], match: Any) -> Done:
        return await self.resolver.forget(match["person_id"]), {"person_id": match["person_id"]}

    async def _merge(self, body: dict[str, Any], match: Any) -> Done:
        keep, gone = match["person_id"], text(body, "gone")
        return await self.resolver.merge(keep, gone), {"keep": keep, "gone": gone}

    async def _move(self, body: dict[str, Any], match: Any) -> Done:
        face_id, person_id = match["face_id"], text(body, "person_id")
        return await self.resolver.move(face_id, person_id), {"face_id": face_id, "person_id": person_id}

    async def _reject(self, body: dict[str, Any], match: Any) -> Done:
        person = await self.resolver.reject(match["face_id"])  # the person the face left
        return person, {"face_id": match["face_id"], "person_id": person.person_id}

    async def _enroll(self, body: dict[str, Any], match: Any) -> Done:
        name = text(body, "name")
        done = await self.resolver.enroll(name, [FaceQuery.from_json(q, thing="enroll") for q in body.get("faces", [])
                                                 if isinstance(q, str)])
        return done, {"person_id": done.person.person_id if done.person else None, "name": name,
                      "faces": len(done.added)}

    def _action(self, change: str, act: Callable[[dict[str, Any], Any], Awaitable[Done]]) -> Any:
        async def handle(request: Any) -> Any:
            from aiohttp import web

            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
                done, detail = await act(body, request.match_info)
            except KeyError as e:
                return web.json_response({"error": f"no such person or face {e.args[0]!r}"}, status=404)
            except NameTaken as e:  # 409, with the holder: the client raises the same error
                return web.json_response({"error": str(e), "holder": e.holder}, status=409)
            except (ValueError, TypeError, MessageError) as e:
                return web.json_response({"error": str(e)}, status=400)
            except RecursionError:  # JSON nested deeper than Python's parser goes: a bad request, not a crash
                return web.json_response({"error": "request nested too deeply"}, status=400)
            await self.changes.record(f"control socket ({_peer(request)})", change, **detail)
            return web.json_response(dataclasses.asdict(done))

        return handle


class ControlClient:
    """The resolver's operator actions, through a running process's control socket (what Resolver offers
    the CLI, with the same errors: KeyError for an unknown person or face, NameTaken for a name another
    person holds, ValueError for a bad request)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: Any = None

    @classmethod
    async def connect(cls, path: Path) -> "ControlClient | None":
        """A client if a process answers on `path`; None if none runs there."""
        if not path.exists():
            return None
        client = cls(path)
        try:
            await client.persons()
        except OSError:  # a socket left behind, nobody listening
            await client.close()
            return None
        return client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self.path)),
                                                  timeout=aiohttp.ClientTimeout(total=60))
        try:
            async with self._session.request(method, f"http://facewatchd{url}", json=body) as response:
                data = await response.json()
        except aiohttp.ClientConnectionError as e:
            raise OSError(f"{self.path}: {e}") from e
        if response.status == 404:
            raise KeyError(data.get("error", url))
        if response.status == 409:
            raise NameTaken(data.get("error", "name taken"), str(data.get("holder", "")))
        if response.status >= 400:
            raise ValueError(data.get("error", f"HTTP {response.status}"))
        return data

    async def persons(self) -> list[Person]:
        return [Person(**p) for p in await self._call("GET", "/persons")]

    async def label(self, person_id: str, name: str) -> Person:
        return Person(**await self._call("POST", f"/persons/{person_id}/label", {"name": name}))

    async def forget(self, person_id: str) -> Person:
        return Person(**await self._call("POST", f"/persons/{person_id}/forget"))

    async def merge(self, keep: str, gone: str) -> Person:
        return Person(**await self._call("POST", f"/persons/{keep}/merge", {"gone": gone}))

    async def move(self, face_id: str, person_id: str) -> Person:
        return Person(**await self._call("POST", f"/faces/{face_id}/move", {"person_id": person_id}))

    async def reject(self, face_id: str) -> Person:
        return Person(**await self._call("POST", f"/faces/{face_id}/reject"))

    async def enroll(self, name: str, queries: list[FaceQuery]) -> Enrollment:
        data = await self._call("POST", "/enroll", {"name": name, "faces": [q.to_json().decode() for q in queries]})
        return Enrollment(Person(**data["person"]) if data["person"] else None, data["added"],
                          {f: Match(**m) for f, m in data["matched"].items()}, data["templates_added"],
                          data["templates_limit"], data["existing"])


def _peer(request: Any) -> str:
    """Who is on the other end of the Unix socket, as the kernel says (SO_PEERCRED)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except (AttributeError, OSError):
        return "unknown peer"
    return f"uid {uid}, pid {pid}"
