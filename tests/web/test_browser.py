"""The review page in a real browser (Debian's Chromium, headless, driven by Playwright) against the real
daemon on the sample clip: log in, see the unknown persons with their crops, name one and watch the
running daemon use the name, merge and forget, and take a screenshot of each page at desktop and phone
width (set FACEWATCHD_SCREENSHOTS=docs/screenshots to refresh the committed ones)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from facewatchd.plugins import PluginHost
from facewatchd.web.auth import hash_password
from tests.plugins.support import HttpReceiver, eventually, run_in_loop
from tests.support.daemon import SAMPLE_CLIP, make_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
NAME = "Lin-Manuel Miranda"

pytestmark = pytest.mark.timeout(240)  # `make test` installs Debian's chromium (make servers)


def keep_screenshots(shots: Path) -> None:
    """Copy a test's screenshots to $FACEWATCHD_SCREENSHOTS, when set (to refresh the committed ones)."""
    if os.environ.get("FACEWATCHD_SCREENSHOTS"):
        target = Path(os.environ["FACEWATCHD_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots.glob("*.png"):
            shutil.copy(shot, target / shot.name)


async def test_review_name_merge_and_forget_in_a_browser_while_the_daemon_runs(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    relay = HttpReceiver()
    config = make_config(
        tmp_path / "state", cameras=[{"id": "stage", "source": str(SAMPLE_CLIP), "loop": True, "pace": "realtime"}],
        web={"port": 0, "password_hash": hash_password("s3cret pass")},
        plugins={"door": {"backend": {"type": "http", "unlock_url": relay.url("/u"), "lock_url": relay.url("/l")},
                          "allow": [NAME], "audit_log": str(tmp_path / "door.jsonl")}})
    host = PluginHost(config)
    host.load()
    shots = tmp_path / "screens"
    shots.mkdir()

    async def scenario(daemon: Any) -> None:
        await eventually(lambda: daemon.web is not None, 30, what="the web server")
        names = daemon._embedded.stores.names
        await eventually(lambda: len(daemon.recognizer.cache.persons()) >= 4, 60, what="a few unknown persons")
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport=SIZES["desktop"])
            await page.goto(f"{base}/review")
            assert page.url.startswith(f"{base}/login")  # no session: the login page
            await page.fill("input[name=user]", "admin")
            await page.fill("input[name=password]", "s3cret pass")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/review")
            cards = page.locator("section.person")
            assert await cards.count() >= 4
            first_crop = cards.first.locator(".crops img").first
            assert await first_crop.evaluate("img => img.complete && img.naturalWidth > 0")  # a real crop

            # name the first unknown person: the running daemon names him from then on
            person_id = await cards.first.get_attribute("id")
            assert person_id
            await cards.first.locator("input[name=name]").fill(NAME)
            await cards.first.locator("button", has_text="Name").click()
            await page.wait_for_url(f"{base}/review")
            await eventually(lambda: daemon.recognizer.cache.persons().get(person_id) == NAME, 5,
                             what="the running daemon to use the name")
            assert await page.locator(f"section#{person_id}").count() == 0  # named: no longer to review

            # merge the next two unknown persons, then forget the merged one
            keep, gone = [await cards.nth(i).get_attribute("id") for i in range(2)]
            await page.goto(f"{base}/people/{keep}")
            await page.fill("input[name=gone]", str(gone))
            await page.click("text=Merge into this person")
            await page.click("form.confirm button.danger")  # merging asks first
            await page.wait_for_url(f"{base}/people/{keep}")
            merged = await names.get(keep)
            assert merged is not None and await names.get(gone) is None
            await eventually(lambda: gone not in daemon.recognizer.cache.persons(), 5, what="the merge on the device")
            crops = [daemon._embedded.stores.crops.root / (await names.face(f)).crop_key for f in merged.faces]
            assert crops and all(c.exists() for c in crops)
            await page.click("text=Forget this person…")
            assert "cannot be undone" in await page.content()
            await page.click("button:has-text('Forget everywhere')")
            await page.wait_for_url(f"{base}/people")
            assert await names.get(keep) is None and not any(c.exists() for c in crops)
            await eventually(lambda: keep not in daemon.recognizer.cache.persons(), 5, what="the forget on the device")

            for size, viewport in SIZES.items():
                await page.set_viewport_size(viewport)
                for name, path in (("review", "/review"), ("people", "/people"), ("person", f"/people/{person_id}"),
                                   ("forget", f"/people/{person_id}/forget"), ("now", "/now"), ("door", "/audit")):
                    await page.goto(f"{base}{path}")
                    if name == "now":
                        await page.wait_for_selector("#now section", timeout=10_000)  # filled by the live events
                    await page.screenshot(path=str(shots / f"{name}-{size}.png"))
            await browser.close()

    try:
        _, summary = await run_in_loop(config, host, until=scenario, timeout=180)
    finally:
        relay.close()
    assert any(p["name"] == NAME for p in summary.persons.values())
    assert len(list(shots.glob("*.png"))) == 12
    keep_screenshots(shots)


async def test_the_door_page_shows_a_presentation_attack_with_its_crop(tmp_path: Path, enrolled: Any) -> None:
    """A print of an allowlisted person held up to the door: the door page lists the refusal with the face
    crop it kept and the liveness scores, at desktop and phone width."""
    from playwright.async_api import async_playwright

    from tests.plugins.test_door_liveness import held_up
    from tests.support.daemon import FIXTURES

    relay = HttpReceiver()
    attack = held_up(tmp_path / "print.avi", FIXTURES / "obama2.jpg", "print", card_px=240, seed=5)
    audit_log = tmp_path / "door.jsonl"
    config = make_config(
        enrolled.state(tmp_path), cameras=[{"id": "door", "source": str(attack), "loop": True}],
        web={"port": 0, "password_hash": hash_password("s3cret pass")},
        plugins={"door": {"backend": {"type": "http", "unlock_url": relay.url("/u"), "lock_url": relay.url("/l")},
                          "allow": ["Barack Obama"], "audit_log": str(audit_log)}})
    host = PluginHost(config)
    host.load()
    shots = tmp_path / "screens"
    shots.mkdir()

    async def scenario(daemon: Any) -> None:
        await eventually(lambda: daemon.web is not None and audit_log.exists()
                         and "presentation attack" in audit_log.read_text(), 60, what="the door's refusal")
        base = f"http://127.0.0.1:{daemon.web.port}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport=SIZES["desktop"])
            await page.goto(f"{base}/login")
            await page.fill("input[name=user]", "admin")
            await page.fill("input[name=password]", "s3cret pass")
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/review")
            await page.click("nav >> text=Door")
            await page.wait_for_url(f"{base}/audit")
            row = page.locator("tr.attack").first
            assert "presentation attack" in await row.inner_text() and "Barack Obama" in await row.inner_text()
            crop = row.locator("img")
            assert await crop.evaluate("img => img.complete && img.naturalWidth > 0")  # the kept crop, served
            assert "liveness scores" in await row.inner_text()
            for size, viewport in SIZES.items():
                await page.set_viewport_size(viewport)
                await page.screenshot(path=str(shots / f"door-attack-{size}.png"))
            missing = await page.goto(f"{base}/audit/attacks/..%2Fdoor.jsonl")
            assert missing is not None and missing.status == 404  # nothing but a kept crop is served
            await browser.close()

    try:
        await run_in_loop(config, host, until=scenario, timeout=120)
    finally:
        relay.close()
    assert "/u" not in relay.paths()
    keep_screenshots(shots)
