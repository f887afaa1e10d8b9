#!/usr/bin/env python3
"""Response time of the review page with many persons: N persons (default 10,000) with a face each in the
local resolver's stores, the real web server, a logged-in HTTP client. Medians and p95 over repeated
requests for the first and a deep page of People, Review, and one person. A table, then one JSON line.

    .venv/bin/python bench/web_pages.py --persons 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from facewatchd.logs import configure_logging
from facewatchd.messages import FaceQuery, Resolution, new_face_id
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.web import WebConfig, WebServer
from facewatchd.web.auth import hash_password

CROP = (Path(__file__).parents[1] / "tests" / "fixtures" / "obama_small.jpg").read_bytes()


async def fill(backend: EmbeddedResolver, persons: int) -> list[str]:
    rng = np.random.default_rng(0)
    ids = []
    for i in range(persons):
        v = rng.normal(size=128).astype(np.float32)
        q = FaceQuery(new_face_id(), "door-1", "cam", "t", CROP, v / np.linalg.norm(v), time.time())
        key = await backend.stores.crops.put(q)
        pid = f"person-{i:06d}"
        await backend.stores.names.record(Resolution(q.face_id, pid, None, 1.0, True), "door-1", key, q.face_id)
        if i % 3 == 0:
            await backend.stores.names.set_name(pid, f"Person {i}")
        ids.append(pid)
    return ids


async def timed(session: aiohttp.ClientSession, url: str, n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url, allow_redirects=False) as r:
            assert r.status == 200, (url, r.status)  # no redirect to the login page
            body = await r.read()
            assert b"person-" in body, url
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 1), "p95_ms": round(samples[int(0.95 * (n - 1))], 1)}


async def main(persons: int, requests: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        backend = EmbeddedResolver(Path(tmp), LocalResolverConfig())
        started = time.perf_counter()
        ids = await fill(backend, persons)
        filled_s = time.perf_counter() - started
        config = WebConfig(port=0, password_hash=hash_password("bench"))
        async with WebServer(config, backend.resolver, Path(tmp)) as web:
            base = f"http://127.0.0.1:{web.port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                async with session.post(f"{base}/login", data={"user": "admin", "password": "bench"}) as r:
                    assert r.status == 200
                pages = {"people first page": "/people", "people page 100": "/people?page=100",
                         "review first page": "/review", "one person": f"/people/{ids[len(ids) // 2]}"}
                results = {name: await timed(session, base + path, requests) for name, path in pages.items()}
        backend.close()
    return {"persons": persons, "requests": requests, "fill_s": round(filled_s, 1), "pages": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    configure_logging("json", "error")
    report = asyncio.run(main(args.persons, args.requests))
    print(f"{report['persons']} persons ({report['fill_s']} s to fill); {report['requests']} requests each")
    for name, r in report["pages"].items():  # type: ignore[union-attr]
        print(f"  {name:<20} median {r['median_ms']:>7.1f} ms   p95 {r['p95_ms']:>7.1f} ms")
    print(json.dumps(report), file=sys.stdout)
