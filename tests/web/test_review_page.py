"""The review page's workflow in a real browser (Debian's Chromium, headless, driven by Playwright) against
the real server on the embedded resolver, with the fixtures' face photos as crops: pick a merge or move
target by name or picture, confirm what takes something away, undo a change for a while, errors next to
their forms, labelled numbers, linked names, a fresh "last seen", the door in the navigation, a phone's
width, and a page of junk dismissed at once. Every wait is on a condition, never a fixed sleep."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import pytest

from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.web import Live, Sighting, WebConfig, WebServer
from facewatchd.web.auth import hash_password
from tests.support.daemon import FIXTURES
from tests.web.test_browser import ARGS, CHROMIUM, SIZES, keep_screenshots

pytestmark = pytest.mark.timeout(120)
NAME = "Lin-Manuel Miranda"
LONG_AGO = datetime(2024, 1, 2, 3, 4).timestamp()  # when the resolver recorded every face here
PHOTOS = {NAME: ["obama.jpg"], "u1": ["biden.jpg"], "u2": ["obama1.jpg", "obama2.jpg"], "u3": ["obama3.jpg"]}


@dataclass
class Site:
    base: str
    web: WebServer
    ids: dict[str, str]  # NAME, u1, u2, u3 → person id
    page: Any
    browser: Any

    @property
    def names(self) -> Any:
        return self.web.names

    async def open(self, path: str) -> None:
        await self.page.goto(f"{self.base}{path}")

    async def login(self, page: Any) -> None:
        await page.goto(f"{self.base}/login")
        await page.fill("input[name=user]", "admin")
        await page.fill("input[name=password]", "pw")
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{self.base}/review")


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


async def _site(tmp_path: Path, door: bool = True, javascript: bool = True) -> AsyncIterator[Site]:
    from playwright.async_api import async_playwright

    backend = EmbeddedResolver(tmp_path, LocalResolverConfig(), clock=lambda: LONG_AGO)
    ids = {}
    for seed, (who, photos) in enumerate(PHOTOS.items()):
        queries = [FaceQuery(new_face_id(), "door-1", "door", "t", (FIXTURES / f).read_bytes(), _unit(seed * 10 + i),
                             LONG_AGO) for i, f in enumerate(photos)]
        person = (await backend.resolver.enroll(who, queries, thing="door-1")).person
        assert person is not None
        ids[who] = person.person_id
        if who != NAME:
            await backend.stores.names.set_name(person.person_id, None)  # an unknown person, to review
    audit = tmp_path / "door.jsonl"
    audit.write_text('{"ts": "2026-01-01T08:00:00", "decision": "grant", "reason": "allowlisted", '
                     f'"name": "{NAME}", "similarity": 0.71, "camera": "door"}}\n')
    live = Live()
    config = WebConfig(port=0, password_hash=hash_password("pw"))
    async with WebServer(config, backend.resolver, tmp_path, live, audit if door else None) as web, \
            async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await (await browser.new_context(viewport=SIZES["desktop"], java_script_enabled=javascript)).new_page()
        page.set_default_timeout(15_000)
        site = Site(f"http://127.0.0.1:{web.port}", web, ids, page, browser)
        await site.login(page)
        yield site
        await browser.close()
    backend.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path):
        yield s


@pytest.fixture
async def no_script(tmp_path: Path) -> AsyncIterator[Site]:
    async for s in _site(tmp_path, javascript=False):
        yield s


async def _confirm(site: Site, button: str, unchanged: Any = None) -> str:
    """The confirmation page: what it says (and, before its button, that asking changed nothing)."""
    from playwright.async_api import expect

    ask = site.page.locator("form.confirm")
    await expect(ask).to_be_visible()
    text = await ask.inner_text()
    if unchanged is not None:
        assert await unchanged()
    await ask.locator("button.danger", has_text=button).click()
    return text


async def _exists(site: Site, person_id: str) -> bool:
    return await site.names.get(person_id) is not None


async def _flash(site: Site, text: str) -> None:
    from playwright.async_api import expect

    await expect(site.page.locator(".flash[role=status]")).to_contain_text(text)


async def test_merge_target_picked_by_picture_as_you_type_is_confirmed_and_undone(site: Site) -> None:
    from playwright.async_api import expect

    lin, u1 = site.ids[NAME], site.ids["u1"]
    faces = (await site.names.get(lin)).faces
    await site.open(f"/people/{u1}")
    await site.page.locator("input[name=gone]").press_sequentially("lin-m")
    choice = site.page.locator("ul.pick button", has_text=NAME)
    await expect(choice).to_be_visible()  # the suggestion as you type, with its crop
    assert await choice.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    await expect(site.page.locator("ul.pick button", has_text=u1)).to_have_count(0)  # not the person itself
    await choice.click()
    await expect(site.page.locator("input[name=gone]")).to_have_value(lin)
    await site.page.click("text=Merge into this person")
    said = await _confirm(site, "Merge", unchanged=lambda: _exists(site, lin))
    assert f"Merge {NAME} into unknown {u1}?" in said
    await site.page.wait_for_url(f"{site.base}/people/{u1}")
    await _flash(site, f"Merged {NAME} into unknown {u1}.")
    assert await site.names.get(lin) is None
    await site.page.click(".flash button:has-text('Undo')")
    await site.page.wait_for_url(f"{site.base}/people/{lin}")
    await _flash(site, f"Merge undone: {NAME} is a person of their own again.")
    back = await site.names.get(lin)
    assert back is not None and back.name == NAME and back.faces == faces and back.templates == len(faces)
    kept = (await site.names.get(u1)).faces
    assert not set(faces) & set(kept)


async def test_a_typed_name_moves_a_face_without_javascript_and_the_move_is_undone(no_script: Site) -> None:
    site = no_script
    lin, u2 = site.ids[NAME], site.ids["u2"]
    face_id = (await site.names.get(u2)).faces[0]
    await site.open(f"/people/{u2}")
    form = site.page.locator(f"form[action='/faces/{face_id}/move']")
    await form.locator("input[name=person_id]").fill(NAME)
    await form.locator("button").click()
    said = await _confirm(site, "Move")
    assert f"Move this face from unknown {u2} to {NAME}?" in said
    await site.page.wait_for_url(f"{site.base}/people/{lin}")
    await _flash(site, f"Moved the face to {NAME}.")
    assert (await site.names.face(face_id)).person_id == lin
    await site.page.click(".flash button:has-text('Undo')")
    await site.page.wait_for_url(f"{site.base}/people/{u2}")
    await _flash(site, f"Move undone: the face is unknown {u2}'s again.")
    assert (await site.names.face(face_id)).person_id == u2


async def test_an_unknown_or_shared_name_is_refused_next_to_the_form(site: Site) -> None:
    from playwright.async_api import expect

    u1 = site.ids["u1"]
    await site.open(f"/people/{u1}")
    await site.page.fill("input[name=gone]", "Nobody Atall")
    await site.page.click("text=Merge into this person")
    await site.page.wait_for_url(f"{site.base}/people/{u1}")
    error = site.page.locator(f"form[action='/people/{u1}/merge'] + div.error[role=alert]")
    await expect(error).to_contain_text("Nobody is called 'Nobody Atall'")
    assert await error.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"  # styled
    await expect(site.page.locator("input[name=gone]")).to_have_value("Nobody Atall")  # typed again for you
    await site.names.set_name(site.ids["u3"], NAME)  # two persons of one name (set past the resolver's check)
    await site.page.fill("input[name=gone]", NAME.lower())
    await site.page.click("text=Merge into this person")
    await expect(error).to_contain_text(f"2 persons are called '{NAME.lower()}'")
    assert len(await site.names.list()) == 4  # nothing merged


async def test_a_name_held_by_another_person_offers_the_merge_there(site: Site, monkeypatch: Any) -> None:
    """The resolver refuses a name another person holds with a ValueError carrying `holder`: the page shows
    it next to the name field, with "merge into" that person."""
    from playwright.async_api import expect

    lin, u1 = site.ids[NAME], site.ids["u1"]

    class Taken(ValueError):
        holder = lin

    async def label(person_id: str, name: str) -> None:
        raise Taken(f"{name} is another person's name")

    monkeypatch.setattr(site.web.resolver, "label", label)
    card = site.page.locator(f"section#{u1}")
    await card.locator("input[name=name]").fill(NAME)
    await card.locator("button", has_text="Name").click()
    error = card.locator("div.error[role=alert]")
    await expect(error).to_contain_text(f"{NAME} is another person's name")
    await error.locator("button", has_text=f"Merge into {NAME}").click()
    await _confirm(site, "Merge")
    await _flash(site, f"Merged unknown {u1} into {NAME}.")
    assert await site.names.get(u1) is None and len((await site.names.get(lin)).faces) == 2


async def test_not_this_person_asks_first_and_is_undone_with_its_crop(site: Site) -> None:
    u2 = site.ids["u2"]
    face_id = (await site.names.get(u2)).faces[-1]
    crop = site.web.crops.root / (await site.names.face(face_id)).crop_key
    await site.open(f"/people/{u2}")
    await site.page.locator(f"form[action='/faces/{face_id}/reject'] button").click()
    said = await _confirm(site, "Not this person")
    assert "unless you undo it within 5 minutes" in said
    await _flash(site, f"Took the face away from unknown {u2}.")
    assert await site.names.face(face_id) is None and not crop.exists()
    await site.page.click(".flash button:has-text('Undo')")
    await _flash(site, f"Undone: the face is unknown {u2}'s again.")
    restored = await site.names.face(face_id)
    assert restored is not None and restored.person_id == u2 and restored.face_ref
    img = site.page.locator(f"img[src='/crops/{face_id}.jpg']")
    assert await img.evaluate("img => img.complete && img.naturalWidth > 0")  # the crop, back


async def test_naming_says_so_and_undo_takes_the_name_back(site: Site) -> None:
    from playwright.async_api import expect

    u1 = site.ids["u1"]
    card = site.page.locator(f"section#{u1}")
    await card.locator("input[name=name]").fill("Ana")
    await card.locator("button", has_text="Name").click()
    await _flash(site, "Named Ana.")
    await expect(card).to_have_count(0)
    await site.page.click(".flash button:has-text('Undo')")
    await _flash(site, "Naming Ana undone: unnamed again.")
    assert (await site.names.get(u1)).name is None
    await site.open("/review")
    await expect(card).to_have_count(1)  # to review again
    await expect(site.page.locator(".flash")).to_have_count(0)  # a message is shown once


async def test_a_page_of_junk_is_dismissed_in_one_action_after_asking(site: Site) -> None:
    from playwright.async_api import expect

    u1, u2 = site.ids["u1"], site.ids["u2"]
    for pid in (u1, u2):
        await site.page.locator(f"section#{pid} input[type=checkbox]").check()
    await site.page.click("text=Dismiss checked")
    said = await _confirm(site, "Dismiss them")
    assert "Dismiss 2 unknown person(s)?" in said
    await _flash(site, "Dismissed 2 person(s)")
    await expect(site.page.locator("section.person")).to_have_count(1)
    await site.page.click("text=Dismiss all 1 on this page")
    await _confirm(site, "Dismiss them")
    await expect(site.page.locator("section.person")).to_have_count(0)
    await expect(site.page.locator("text=Nobody to review")).to_be_visible()


async def test_errors_are_pages_with_a_way_back(site: Site) -> None:
    response = await site.page.goto(f"{site.base}/people/person-0000000000")
    assert response is not None and response.status == 404
    problem = site.page.locator("section.problem")
    assert "No such person" in await problem.inner_text()
    await problem.locator("a", has_text="Back to the review").click()
    await site.page.wait_for_url(f"{site.base}/review")
    other = await site.browser.new_page()
    for _ in range(5):
        await other.goto(f"{site.base}/login")
        await other.fill("input[name=user]", "admin")
        await other.fill("input[name=password]", "wrong")
        await other.click("button[type=submit]")
    await other.fill("input[name=user]", "admin")
    await other.fill("input[name=password]", "pw")
    async with other.expect_response(lambda r: r.request.method == "POST" and "/login" in r.url) as answer:
        await other.click("button[type=submit]")
    assert (await answer.value).status == 429
    assert "Too many failed logins" in await other.locator("form.login .error").inner_text()
    assert await other.locator("form.login input[name=password]").count() == 1  # the way back: the form


async def test_numbers_are_labelled_names_linked_and_last_seen_is_the_latest_sighting(site: Site) -> None:
    from playwright.async_api import expect

    lin = site.ids[NAME]
    now = time.time()
    assert site.web.live is not None
    site.web.live.seen[lin] = deque([Sighting("door", "t9", now, 4.2, lin, NAME)])
    site.web.live.now["door"] = {"t9": Sighting("door", "t9", now, 0.0, lin, NAME, 0.69)}
    await site.open(f"/people/{lin}")
    meta = await site.page.locator("p.meta").inner_text()
    assert f"last seen {datetime.fromtimestamp(now):%Y-%m-%d %H:%M}" in meta, meta
    assert "in view 4.2 s" in await site.page.locator("ul.seen").inner_text()
    await site.open("/now")
    item = site.page.locator("#now li", has_text=NAME)
    await expect(item).to_contain_text("similarity 0.69")
    await expect(item.locator("a")).to_have_attribute("href", f"/people/{lin}")
    site.web.live._touch()  # the live events redraw it: the link and the label stay
    await expect(item.locator("a")).to_have_attribute("href", f"/people/{lin}")
    await item.locator("a").click()
    await site.page.wait_for_url(f"{site.base}/people/{lin}")


async def test_the_door_is_in_the_navigation_when_the_door_plugin_is_on(site: Site, tmp_path: Path) -> None:
    await site.page.click("nav >> text=Door")
    await site.page.wait_for_url(f"{site.base}/audit")
    assert "allowlisted" in await site.page.locator("table.audit").inner_text()
    async for other in _site(tmp_path / "no-door", door=False):
        assert await other.page.locator("nav a", has_text="Door").count() == 0


async def test_a_phone_has_room_to_type_merge_and_move_targets(site: Site) -> None:
    await site.page.set_viewport_size(SIZES["phone"])
    await site.open(f"/people/{site.ids['u2']}")
    widths = await site.page.locator("input[name=gone], input[name=person_id]").evaluate_all(
        "inputs => inputs.map(i => i.getBoundingClientRect().width)")
    assert len(widths) == 3 and min(widths) >= 200, widths  # 20 characters or more
    assert await site.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways


async def test_screenshots_of_the_review_person_and_door_pages(site: Site, tmp_path: Path) -> None:
    """Set FACEWATCHD_SCREENSHOTS=docs/review-page to refresh the committed ones."""
    shots = tmp_path / "shots"
    shots.mkdir()
    u2 = site.ids["u2"]
    for size, viewport in SIZES.items():
        await site.page.set_viewport_size(viewport)
        for name, path in (("review", "/review"), ("person", f"/people/{u2}"), ("door", "/audit")):
            await site.open(path)
            await site.page.screenshot(path=str(shots / f"{name}-{size}.png"))
    assert len(list(shots.glob("*.png"))) == 6
    keep_screenshots(shots)


async def test_naming_a_person_offers_the_persons_likely_the_same(site: Site, tmp_path: Path) -> None:
    """u3 was marked possibly u2 (a split the resolver linked): naming u2 offers merging u3 in, with its crop."""
    import sqlite3

    from playwright.async_api import expect

    u2, u3 = site.ids["u2"], site.ids["u3"]
    db = sqlite3.connect(str(tmp_path / "resolver" / "resolver.db"))  # what the resolver records for a split
    with db:
        db.execute("UPDATE persons SET possibly=? WHERE person_id=?", (u2, u3))
    db.close()
    await site.open(f"/people/{u2}")
    await site.page.locator("form[action$='/label'] input[name=name]").fill("Ana")
    await site.page.locator("form[action$='/label'] button").click()
    await _flash(site, "Named Ana.")
    offer = site.page.locator(".flash form.likely")
    await expect(offer).to_contain_text(f"Likely the same person:")
    await expect(offer.locator("img")).to_have_count(1)
    await offer.locator("button").click()
    await _confirm(site, "Merge")
    await _flash(site, "Merged")
    assert not await _exists(site, u3) and len((await site.names.get(u2)).faces) == 3
