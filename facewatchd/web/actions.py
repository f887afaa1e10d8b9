"""The review page's changes (the POSTs): each goes through the running resolver (so a running daemon uses
it in its next frames), is logged with who made it, asks first when it takes something away, and says
what it did on the next page, with an undo for a few minutes. An error is shown next to its form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

from facewatchd.resolver.ports import Person
from facewatchd.state import required_text
from facewatchd.web.auth import COOKIE
from facewatchd.web.flash import UNDO_S, Done, Flash, Flashes
from facewatchd.web.security import local_path

if TYPE_CHECKING:
    from facewatchd.web.site import Site

Act = Callable[[Any, Any], Awaitable[Done]]


class Confirm(Exception):
    """Ask first: the page says what the change will do and posts the same form again, confirmed. A page,
    not a script's confirm(), so it asks without JavaScript too."""

    def __init__(self, title: str, text: str, faces: list[str], button: str) -> None:
        super().__init__(title)
        self.title, self.text, self.faces, self.button = title, text, faces, button


def shown(person: Person | None, person_id: str = "") -> str:
    """How a message names a person: by name, else as the unknown person they are."""
    if person is None:
        return person_id or "nobody"
    return person.name or f"unknown {person.person_id}"


def matching(persons: list[Person], query: str) -> list[Person]:
    """Persons whose name (or a word of it) or id starts with `query`, ignoring case: named ones first,
    then the most recently seen."""
    q = query.strip().casefold()
    hits = [p for p in persons if p.person_id.startswith(q) or (p.name and any(
        w.startswith(q) for w in [p.name.casefold(), *p.name.casefold().split()]))]
    return sorted(hits, key=lambda p: (p.name is None, -p.last_seen))


class Actions:
    def __init__(self, server: "Site") -> None:
        self.server = server
        self.resolver = server.resolver
        self.names = server.names
        self.flashes = Flashes()

    def change(self, act: Act, form_key: str) -> Callable[[Any], Awaitable[Any]]:
        """A POST that changes something; `form_key` (formatted with the route's parts) names the form an
        error is shown next to."""
        async def handle(request: Any) -> Any:
            from aiohttp import web

            form = await request.post()
            session = request.cookies.get(COOKIE, "")
            back = local_path(str(form.get("back") or ""), "/review")
            try:
                done = await act(request, form)
            except Confirm as ask:
                fields = [(k, str(v)) for k, v in form.items() if k not in ("csrf", "confirm")]
                return self.server.render("confirm.html", request, {
                    "ask": ask, "action": request.path, "fields": fields, "back": back})
            except (KeyError, ValueError) as e:
                self.flashes.put(session, await self._error(e, form_key.format(**request.match_info), form, request))
                raise web.HTTPSeeOther(back) from None
            await self.server.changes.record(request[self.server.session_key].user, done.what, remote=request.remote,
                                             **done.detail)
            token = self.flashes.offer(session, done.undo) if done.undo else ""
            self.flashes.put(session, Flash(done.message, undo=token, merges=done.merges))
            raise web.HTTPSeeOther(done.back)

        return handle

    async def _error(self, e: Exception, form_key: str, form: Any, request: Any) -> Flash:
        if isinstance(e, KeyError):
            message = f"Not found: {e.args[0]}. It may have been merged or forgotten meanwhile."
        else:
            message = str(e)
        merge = None
        holder = getattr(e, "holder", None)  # the name is another person's: offer to merge into them instead
        if isinstance(holder, str) and "person_id" in request.match_info:
            merge = (holder, shown(await self.names.get(holder), holder), request.match_info["person_id"])
        typed = next((str(form.get(k)) for k in ("name", "gone", "person_id") if form.get(k)), "")
        return Flash(message, error=True, form=form_key, value=typed, merge=merge)

    async def person_ref(self, value: str) -> str:
        """A person id, or a name exactly one person holds: an unknown or shared name is refused, said how."""
        if await self.names.get(value) is not None:
            return value
        holders = [p for p in await self.names.list() if p.name and p.name.casefold() == value.casefold()]
        if not holders:
            raise ValueError(f"Nobody is called {value!r}: pick a person from the list as you type.")
        if len(holders) > 1:
            ids = ", ".join(p.person_id for p in holders)
            raise ValueError(f"{len(holders)} persons are called {value!r} ({ids}): pick one by its picture.")
        return holders[0].person_id

    async def _person(self, person_id: str) -> Person:
        person = await self.names.get(person_id)
        if person is None:
            raise KeyError(person_id)
        return person

    # -- the changes ----------------------------------------------------------------------------
    async def label(self, request: Any, form: Any) -> Done:
        pid, name = request.match_info["person_id"], _text(form, "name")
        previous = (await self._person(pid)).name
        await self.resolver.label(pid, name)

        async def undo() -> Done:
            await (self.resolver.unname(pid) if previous is None else self.resolver.label(pid, previous))
            said = f"named {previous} again" if previous else "unnamed again"
            return Done("undo label", {"person_id": pid, "name": previous}, f"/people/{pid}",
                        f"Naming {name} undone: {said}.")

        return Done("label", {"person_id": pid, "name": name}, _back(form, f"/people/{pid}"), f"Named {name}.", undo,
                    await self._likely_the_same(pid))

    async def _likely_the_same(self, pid: str) -> tuple[tuple[str, str, str, str], ...]:
        """The persons linked to `pid` as *possibly* the same (either way): naming one offers merging them."""
        person = await self._person(pid)
        linked = [p for p in await self.names.list() if p.person_id != pid and
                  (p.possibly == pid or p.person_id == person.possibly)]
        return tuple((pid, p.person_id, shown(p), p.faces[-1] if p.faces else "") for p in linked)

    async def merge(self, request: Any, form: Any) -> Done:
        keep = request.match_info["person_id"]
        gone = await self.person_ref(_text(form, "gone"))
        if keep == gone:
            raise ValueError("A person cannot be merged into itself: pick another one.")
        target, source = await self._person(keep), await self._person(gone)
        _confirm(form, f"Merge {shown(source)} into {shown(target)}?",
                 f"The {len(source.faces)} face(s) of {shown(source)} become {shown(target)}'s, on every device.",
                 source.faces[-3:] + target.faces[-3:], "Merge")
        await self.resolver.merge(keep, gone)

        async def undo() -> Done:
            await self.resolver.split(source.faces, gone, source.name)
            return Done("undo merge", {"keep": keep, "gone": gone, "faces": len(source.faces)}, f"/people/{gone}",
                        f"Merge undone: {shown(source)} is a person of their own again.")

        return Done("merge", {"keep": keep, "gone": gone}, _back(form, f"/people/{keep}"),
                    f"Merged {shown(source)} into {shown(target)}.", undo)

    async def move(self, request: Any, form: Any) -> Done:
        face_id = request.match_info["face_id"]
        pid = await self.person_ref(_text(form, "person_id"))
        face = await self.names.face(face_id)
        if face is None:
            raise KeyError(face_id)
        source, target = await self.names.get(face.person_id), await self._person(pid)
        _confirm(form, f"Move this face from {shown(source, face.person_id)} to {shown(target)}?",
                 f"It becomes {shown(target)}'s, with what every device learnt from it.",
                 [face_id] + target.faces[-3:], "Move")
        await self.resolver.move(face_id, pid)

        async def undo() -> Done:
            await self.resolver.move(face_id, face.person_id)
            return Done("undo move", {"face_id": face_id, "person_id": face.person_id}, f"/people/{face.person_id}",
                        f"Move undone: the face is {shown(source, face.person_id)}'s again.")

        return Done("move", {"face_id": face_id, "person_id": pid}, f"/people/{pid}",
                    f"Moved the face to {shown(target)}.", undo)

    async def reject(self, request: Any, form: Any) -> Done:
        face_id = request.match_info["face_id"]
        face, answer = await self.names.face(face_id), await self.names.handled(face_id)
        if face is None or answer is None:
            raise KeyError(face_id)
        person = await self.names.get(face.person_id)
        minutes = int(UNDO_S // 60)
        _confirm(form, f"Not {shown(person, face.person_id)}?",
                 f"The face leaves {shown(person, face.person_id)} everywhere and is deleted, crop and all, "
                 f"unless you undo it within {minutes} minutes.", [face_id], "Not this person")
        try:  # kept in memory for the undo: the resolver deletes the crop now
            crop = await self.server.crops.read(face.crop_key) if face.crop_key else None
        except KeyError:
            crop = None  # already gone (retention): nothing to put back
        await self.resolver.reject(face_id)
        back = f"/people/{face.person_id}"

        async def undo() -> Done:
            assert crop is not None
            await self.resolver.restore(face, crop, answer.similarity)
            return Done("undo reject", {"face_id": face_id, "person_id": face.person_id}, back,
                        f"Undone: the face is {shown(person, face.person_id)}'s again.")

        return Done("reject", {"face_id": face_id, "person_id": face.person_id}, back,
                    f"Took the face away from {shown(person, face.person_id)}.", undo if crop else None)

    async def dismiss(self, request: Any, form: Any) -> Done:
        pid = request.match_info["person_id"]
        await self.names.set_reviewed(pid)
        return Done("dismiss", {"person_id": pid}, "/review", "Dismissed: no longer to review.")

    async def dismiss_many(self, request: Any, form: Any) -> Done:
        """A page of junk in one action: the persons checked (or all on the page), confirmed first."""
        ids = list(dict.fromkeys(str(v) for v in form.getall("person_id", []) if str(v).strip()))
        if not ids:
            raise ValueError("Nothing checked: tick the faces to dismiss, or dismiss all on this page.")
        persons = [p for p in [await self.names.get(i) for i in ids] if p is not None]
        _confirm(form, f"Dismiss {len(persons)} unknown person(s)?",
                 "They leave the review list; they are kept, and stay on the People page.",
                 [p.faces[-1] for p in persons if p.faces], "Dismiss them")
        for p in persons:
            await self.names.set_reviewed(p.person_id)
        return Done("dismiss", {"person_ids": [p.person_id for p in persons]}, "/review",
                    f"Dismissed {len(persons)} person(s): no longer to review.")

    async def forget(self, request: Any, form: Any) -> Done:
        pid = request.match_info["person_id"]
        person = await self._person(pid)
        _confirm(form, f"Forget {shown(person)}?", "This erases the faces, templates and every device's views: "
                 "it cannot be undone.", person.faces[-4:], "Forget everywhere")
        await self.resolver.forget(pid)
        return Done("forget", {"person_id": pid, "faces": len(person.faces), "things": person.things}, "/people",
                    f"Forgot {shown(person)} everywhere.")

    async def undo(self, request: Any, form: Any) -> Done:
        undo = self.flashes.claim(request.cookies.get(COOKIE, ""), _text(form, "undo"))
        if undo is None:
            raise ValueError(f"That change can no longer be undone: an undo lasts {int(UNDO_S // 60)} minutes, once.")
        return await undo.run()


def _confirm(form: Any, title: str, text: str, faces: list[str], button: str) -> None:
    if form.get("confirm") != "yes":
        raise Confirm(title, text, faces, button)


def _back(form: Any, default: str) -> str:
    return local_path(str(form.get("back") or ""), default)


def _text(form: Any, key: str) -> str:
    return required_text(form.get(key), key)
