"""The review page's label action refuses a name another person holds: back to the page with the error next to
the form and the merge to make offered, never a 500, and the name stays where it was."""

from __future__ import annotations

import time

import aiohttp
import numpy as np

from facewatchd.messages import FaceQuery, new_face_id
from tests.support.daemon import FIXTURES
from tests.web.test_security import csrf_of, login, server  # noqa: F401  (a fixture, found by name)


async def test_labelling_with_a_name_another_person_holds_is_refused_with_the_merge(server) -> None:  # noqa: F811
    web, somebody = server
    other = np.zeros(128, np.float32)
    other[0] = 1.0  # far from Somebody's template: a second person
    enrolled = await web.resolver.enroll("Other", [FaceQuery(new_face_id(), "", "enroll", "enroll",
                                                             (FIXTURES / "biden.jpg").read_bytes()[:4000], other,
                                                             time.time())])
    assert enrolled.person is not None
    pid = enrolled.person.person_id
    base = f"http://127.0.0.1:{web.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        await login(browser, base)
        csrf = await csrf_of(browser, base, pid)
        async with browser.post(f"{base}/people/{pid}/label", data={"name": "somebody ", "csrf": csrf, "back": f"/people/{pid}"},
                                allow_redirects=False) as r:
            assert r.status == 303  # back to the page (post, redirect, get), which shows the error
        async with browser.get(f"{base}{r.headers['Location']}") as page:
            text = await page.text()
            assert page.status == 200
            assert f"&#39;somebody&#39; is already {somebody}: merge {pid} into it instead" in text
            assert f'action="/people/{somebody}/merge"' in text  # the merge, offered next to the form
    assert (await web.names.get(pid)).name == "Other"
