"""The review page's pages (the GETs): faces to review, people, one person, who is in view now, the door's
decisions, the crops, and the persons matching what is typed in a merge or move field."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from facewatchd.resolver.ports import Person
from facewatchd.web.actions import matching
from facewatchd.web.auth import COOKIE
from facewatchd.web.live import Sighting

if TYPE_CHECKING:
    from facewatchd.web.site import Site

log = structlog.get_logger("facewatchd.web")

PAGE_SIZE = 48
CROPS_SHOWN = 4
PICKS = 8  # persons offered as you type


class Pages:
    def __init__(self, server: "Site") -> None:
        self.server = server
        self.names = server.names
        self.live = server.live

    def _render(self, name: str, request: Any, context: dict[str, Any], status: int = 200) -> Any:
        return self.server.render(name, request, context, status)

    async def review(self, request: Any) -> Any:
        page = _page(request)
        persons, total = await self.names.page(page * PAGE_SIZE, PAGE_SIZE, unnamed_only=True)
        suggestions = {}
        for p in persons:
            if p.possibly and p.possibly not in suggestions:
                suggestions[p.possibly] = await self.names.get(p.possibly)
        return self._render("review.html", request, {
            "persons": persons, "suggestions": suggestions, "page": page, "pages": _pages(total), "total": total,
            **self._seen(persons), "crops_shown": CROPS_SHOWN})

    async def people(self, request: Any) -> Any:
        page = _page(request)
        persons, total = await self.names.page(page * PAGE_SIZE, PAGE_SIZE)
        return self._render("people.html", request, {
            "persons": persons, "page": page, "pages": _pages(total), "total": total, **self._seen(persons),
            "crops_shown": CROPS_SHOWN})

    async def person(self, request: Any) -> Any:
        person = await self._person(request)
        possibly = await self.names.get(person.possibly) if person.possibly else None
        seen = self._seen([person])
        return self._render("person.html", request, {
            "person": person, "possibly": possibly, "sightings": seen["sightings"].get(person.person_id, []),
            "last_seen": seen["last_seen"]})

    async def forget_page(self, request: Any) -> Any:
        return self._render("forget.html", request, {"person": await self._person(request)})

    async def pick(self, request: Any) -> Any:
        """Persons whose name or id starts with `q` (not `not`), with a crop to pick them by: the merge and
        move fields' suggestions as you type."""
        from aiohttp import web

        q, other = str(request.query.get("q", ""))[:128], str(request.query.get("not", ""))
        hits = [p for p in matching(await self.names.list(), q) if p.person_id != other][:PICKS] if q.strip() else []
        return web.json_response([{"person_id": p.person_id, "name": p.name, "faces": len(p.faces),
                                   "crop": f"/crops/{p.faces[-1]}.jpg" if p.faces else None} for p in hits],
                                 headers={"Cache-Control": "no-store"})

    async def now(self, request: Any) -> Any:
        return self._render("now.html", request, {"cameras": self.live.snapshot() if self.live else {}})

    async def events(self, request: Any) -> Any:
        """Server-sent events: the "now" snapshot each time it changes (and every 15 s, to keep it open)."""
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        try:
            await self._stream(request, response)
        except ConnectionResetError:  # the page was left (aiohttp's ClientConnectionResetError): nothing wrong
            log.debug("web_events_client_left", remote=request.remote)
        return response

    async def _stream(self, request: Any, response: Any) -> None:
        cookie = request.cookies.get(COOKIE)
        while self.server.sessions.get(cookie) is not None:  # ends with the session (a logout, an expiry)
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

    async def audit(self, request: Any) -> Any:
        records: list[dict[str, Any]] = []
        damaged = 0
        door_audit = self.server.door_audit
        if door_audit is not None and door_audit.exists():
            lines = await asyncio.to_thread(_tail, door_audit, 200)
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
        return self._render("audit.html", request, {"records": records, "damaged": damaged})

    async def attack_crop(self, request: Any) -> Any:
        """The face crop the door kept of a presentation attack (a photo or a screen held up)."""
        from aiohttp import web

        from facewatchd.web.door_audit import door_attack_crop

        door_audit = self.server.door_audit
        path = door_attack_crop(door_audit, request.match_info["name"]) if door_audit else None
        try:
            jpeg = await asyncio.to_thread(path.read_bytes) if path else None
        except OSError:
            jpeg = None
        return _jpeg(jpeg)

    async def crop(self, request: Any) -> Any:
        face = await self.names.face(request.match_info["face_id"])
        try:
            jpeg = await self.server.crops.read(face.crop_key) if face and face.crop_key else None
        except KeyError:
            jpeg = None
        return _jpeg(jpeg)

    async def _person(self, request: Any) -> Person:
        from aiohttp import web

        person = await self.names.get(request.match_info["person_id"])
        if person is None:
            raise web.HTTPNotFound(text="No such person: they may have been merged into another or forgotten.")
        return person

    def _seen(self, persons: list[Person]) -> dict[str, Any]:
        """Each person's recent sightings and when they were last seen: the later of the resolver's record and
        the latest sighting listed (a device's cache names a known face without asking the resolver)."""
        sightings: dict[str, list[Sighting]] = {}
        if self.live is not None:
            sightings = {p.person_id: list(self.live.seen.get(p.person_id, ())) for p in persons}
        last = {p.person_id: max([p.last_seen, *(s.ts for s in sightings.get(p.person_id, []))]) for p in persons}
        return {"sightings": sightings, "last_seen": last}


def _jpeg(jpeg: bytes | None) -> Any:
    from aiohttp import web

    if jpeg is None:
        raise web.HTTPNotFound(text="no such crop")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def _page(request: Any) -> int:
    try:
        return max(0, int(request.query.get("page", "0")))
    except ValueError:
        return 0


def _pages(total: int) -> int:
    return max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)


def _tail(path: Path, n: int) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:  # a torn multi-byte character is a damaged line
        return list(deque(f, maxlen=n))
