"""The review page of a cloud deployment: `facewatchd ui` on the AWS adapters (DynamoDB persons, S3 crops
proxied, Rekognition, IoT shadows), against moto and the Rekognition-compatible server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp

from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters
from facewatchd.web import WebConfig, WebServer
from facewatchd.web.auth import hash_password
from tests.resolver_aws.test_cli import aws_config
from tests.support.aws import face_crop, face_query, handle, persons, query_record
from tests.support.broker import free_port
from tests.support.daemon import ROOT, Lines


def test_review_name_and_dismiss_on_aws(aws_stack, container, tmp_path):
    door2 = aws_stack.new_thing()
    obama, biden = face_query(face_crop("obama.jpg"), aws_stack.thing), face_query(face_crop("biden.jpg"), door2)
    assert handle(container, query_record(obama), query_record(biden)) == []  # the Lambda, on its own loop
    obama_id, biden_id = asyncio.run(_review(aws_stack, obama, tmp_path))
    assert persons(aws_stack)[obama_id]["profile"]["name"] == "Barack Obama"
    assert aws_stack.desired()["persons"][obama_id]["name"] == "Barack Obama"  # his device hears of it
    assert persons(aws_stack)[biden_id]["profile"]["reviewed"] is True


async def _review(aws_stack, obama, tmp_path):  # type: ignore[no-untyped-def]
    cfg = AwsResolverConfig(bucket=aws_stack.bucket, table=aws_stack.table, collection_id=aws_stack.collection_id,
                            max_attempts=2)
    async with open_aws_adapters(cfg) as adapters, \
            WebServer(WebConfig(port=0, password_hash=hash_password("pw")), adapters.resolver(cfg), tmp_path) as web:
        base = f"http://127.0.0.1:{web.port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(f"{base}/login", data={"user": "admin", "password": "pw"}) as r:
                review = await r.text()
            ids = {p: e for p, e in persons(aws_stack).items()}
            assert len(ids) == 2 and all(p in review for p in ids)  # both unknown persons to review
            async with browser.get(f"{base}/crops/{obama.face_id}.jpg") as r:
                assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"  # the S3 crop, proxied
                assert "private" in r.headers["Cache-Control"]
            obama_id = next(p for p, e in ids.items() if e["faces"][0]["face_id"] == obama.face_id)
            biden_id = next(p for p in ids if p != obama_id)
            csrf = review.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            async with browser.post(f"{base}/people/{obama_id}/label",
                                    data={"name": "Barack Obama", "csrf": csrf}) as r:
                assert r.status == 200
            async with browser.post(f"{base}/people/{biden_id}/dismiss", data={"csrf": csrf}) as r:
                review = await r.text()
        assert obama_id not in review and biden_id not in review  # named, dismissed: nobody left to review
    return obama_id, biden_id


def test_facewatchd_ui_serves_the_page_for_the_aws_resolver(aws_stack, tmp_path):
    port = free_port()
    cfg = aws_config(tmp_path, aws_stack)
    with open(cfg, "a") as f:
        f.write(f'\n[web]\nport = {port}\npassword_hash = "{hash_password("pw")}"\n[logging]\nformat = "json"\n')
    proc = subprocess.Popen([sys.executable, "-m", "facewatchd", "ui", "--config", cfg], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        Lines(proc.stderr).until(lambda seen: '"web_listening"' in seen, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
