"""One change log, one format: a label made on the review page and one made through the control socket
(`facewatchd faces label` while a daemon runs) are the same kind of line, with the same keys. The real web
server and the real control socket, on one embedded resolver's stores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import numpy as np

from facewatchd.control import ControlClient, ControlServer, socket_path
from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.web import WebConfig, WebServer
from facewatchd.web.auth import hash_password
from tests.support.daemon import FIXTURES
from tests.web.test_security import PASSWORD, csrf_of, login


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)  # two seeds: two different faces
    return v / np.linalg.norm(v)


def changes(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "changes.jsonl").read_text().splitlines()]


async def test_web_and_control_socket_changes_read_alike(tmp_path: Path) -> None:
    backend = EmbeddedResolver(tmp_path, LocalResolverConfig())
    for seed, (name, photo) in enumerate((("Somebody", "obama.jpg"), ("Other", "biden.jpg"))):
        await backend.resolver.enroll(name, [FaceQuery(new_face_id(), "", "enroll", "enroll",
                                                       (FIXTURES / photo).read_bytes()[:4000], unit(seed), time.time())])
    somebody, other = sorted(await backend.resolver.persons(), key=lambda p: p.name != "Somebody")
    try:
        async with WebServer(WebConfig(port=0, password_hash=hash_password(PASSWORD)), backend.resolver,
                             tmp_path) as web, ControlServer(backend.resolver, socket_path(tmp_path)):
            base = f"http://127.0.0.1:{web.port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                await login(browser, base)
                csrf = await csrf_of(browser, base, somebody.person_id)
                async with browser.post(f"{base}/people/{somebody.person_id}/label",
                                        data={"name": "Alice", "csrf": csrf}, allow_redirects=False) as r:
                    assert r.status == 303
            client = await ControlClient.connect(socket_path(tmp_path))
            assert client is not None
            try:
                await client.label(other.person_id, "Bob")
                await client.merge(somebody.person_id, other.person_id)
            finally:
                await client.close()
    finally:
        backend.close()
    by_web, by_socket, merged = changes(tmp_path)
    assert (by_web["change"], by_web["person_id"], by_web["name"]) == ("label", somebody.person_id, "Alice")
    assert (by_socket["change"], by_socket["person_id"], by_socket["name"]) == ("label", other.person_id, "Bob")
    assert by_socket["user"].startswith("control socket (uid ")
    assert set(by_web) - {"remote"} == set(by_socket)  # the web's line also says where the browser was
    assert (merged["change"], merged["keep"], merged["gone"]) == ("merge", somebody.person_id, other.person_id)
