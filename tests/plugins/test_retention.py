"""The retention plugin in the real daemon, with a fake clock: on the embedded resolver it forgets the
unnamed person not seen for N days (the device cache learns it through the shadow and plugins hear
`person_labelled(name=None)`, which is how Home Assistant drops the entity), keeps the named ones, and
deletes exactly the crops, door audit entries and analytics rows older than their N days."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from facewatchd.hookspecs import hookimpl
from facewatchd.identity import IdentityConfig
from facewatchd.pipeline.cache import CacheConfig, FaceCache
from facewatchd.plugins import PluginHost
from facewatchd.resolver.core import DAY_S
from facewatchd.state import append_line, prune_lines
from plugins.analytics.store import AnalyticsStore
from plugins.retention import Plugin, audit_entry_before
from tests.plugins.conftest import Enrolled
from tests.plugins.support import HttpReceiver, eventually, run_in_loop
from tests.resolver.test_retention import FakeClock
from tests.support.daemon import ROOT, make_config

pytestmark = pytest.mark.timeout(120)


class Labels:
    """A plugin that keeps every person_labelled call, as Home Assistant's acts on them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    @hookimpl
    def person_labelled(self, person_id: str, name: str | None, previous: str | None) -> None:
        self.calls.append((person_id, name))


def loaded(config: Any, clock: FakeClock) -> tuple[PluginHost, Plugin, Labels]:
    """The plugins of `config`, retention on the fake clock, and a Labels plugin beside them."""
    host = PluginHost(config)
    host.load()
    retention: Plugin = host.pm.get_plugin("retention")
    retention.clock = clock
    labels = Labels()
    host.register("labels", labels, "test")
    return host, retention, labels


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def analytics_db(path: Path, hours: list[float]) -> None:
    """The analytics plugin's own store, with one visit of one person in each hour."""
    store = AnalyticsStore(path)
    for h in hours:
        store.record("front", h, 3.0, "person-regular")
    store.close()


async def test_retention_in_the_daemon_forgets_old_unnamed_persons_and_old_files(tmp_path: Path, enrolled: Enrolled):
    state = enrolled.state(tmp_path)
    clock = FakeClock(time.time() + 40 * DAY_S)  # 40 days after the enrolled visit
    now = clock()
    [stranger] = [pid for pid, name in enrolled.persons.items() if name is None]
    cache = FaceCache(state / "cache.db", CacheConfig(), IdentityConfig())
    assert stranger in cache.persons()  # the device knows the stranger before the sweep
    cache.close()
    # door audit, analytics and crops: one side of each cutoff
    audit = state / "door-audit.jsonl"
    audit.write_text("".join(json.dumps({"ts": iso(now - d * DAY_S), "decision": "deny", "reason": "unknown face",
                                         "days": d}) + "\n" for d in (120, 91, 89, 1)) + "not json\n")
    analytics_db(state / "analytics.db", [now - d * DAY_S for d in (400, 366, 364, 0)])
    crops_dir = state / "resolver" / "crops"
    with sqlite3.connect(state / "resolver" / "resolver.db") as conn:
        keys = dict(conn.execute("SELECT crop_key, person_id FROM faces").fetchall())
    conn.close()
    assert len(keys) == 5  # two enrolled photos, three resolved faces
    strangers = [crops_dir / k for k, pid in keys.items() if pid == stranger]
    old, *kept = [crops_dir / k for k, pid in sorted(keys.items()) if pid != stranger]
    os.utime(old, (now - 46 * DAY_S, now - 46 * DAY_S))  # the others are 40 days old
    relay = HttpReceiver()
    config = make_config(state, plugins={
        "retention": {"crops_days": 45, "audit_days": 90, "analytics_days": 365, "unnamed_person_days": 30},
        "door": {"backend": {"type": "http", "unlock_url": relay.url("/unlock"), "lock_url": relay.url("/lock")}}})
    host, retention, labels = loaded(config, clock)

    async def forgotten(daemon: Any) -> None:
        await eventually(lambda: daemon.recognizer is not None, what="the daemon's recognizer")
        await eventually(lambda: stranger not in daemon.recognizer.cache.persons(), what="the forget on the device")
        await eventually(lambda: (stranger, None) in labels.calls, what="person_labelled(name=None)")

    try:
        daemon, _ = await run_in_loop(config, host, until=forgotten)
    finally:
        relay.close()
    persons = daemon.recognizer.cache.persons()
    assert sorted(n or "" for n in persons.values()) == ["Barack Obama", "Joe Biden"]  # named: kept
    swept = [s for s in retention.sweeps if s.persons]
    assert [s.persons for s in swept] == [[stranger]]
    assert sum(s.crops for s in retention.sweeps) == 1 and not old.exists()
    assert all(c.exists() for c in kept) and len(kept) == 3
    assert strangers and not any(c.exists() for c in strangers)  # forgotten with the person
    assert [json.loads(line)["days"] for line in audit.read_text().splitlines()[:2]] == [89, 1]
    assert audit.read_text().splitlines()[2:] == ["not json"]  # what cannot be dated is kept
    with sqlite3.connect(state / "analytics.db") as conn:
        left = sorted(round((now - h) / DAY_S) for (h,) in conn.execute("SELECT hour FROM hourly"))
        persons = conn.execute("SELECT count(*) FROM persons").fetchone()[0]
    conn.close()
    assert left == [0, 364] and persons == 1  # the person's later hours keep their pseudonym
    change = json.loads((state / "changes.jsonl").read_text().splitlines()[-1])
    assert (change["user"], change["change"], change["person_id"]) == ("retention", "forget", stranger)


async def test_a_person_the_device_cache_names_is_not_taken_for_gone(tmp_path: Path, enrolled: Enrolled):
    """The cache names a returning stranger without asking the resolver; that sighting counts."""
    state = enrolled.state(tmp_path)
    clock = FakeClock(time.time() + 20 * DAY_S)  # 20 days after the resolver last saw the stranger
    [stranger] = [pid for pid, name in enrolled.persons.items() if name is None]
    config = make_config(state, cameras=[{"id": "yard", "source": str(enrolled.stranger), "loop": True,
                                          "pace": "realtime", "fps": 5}],
                         plugins={"retention": {"unnamed_person_days": 30, "interval_s": 3600}})
    host, retention, labels = loaded(config, clock)

    async def scenario(daemon: Any) -> None:
        await eventually(lambda: retention.resolver is not None and daemon.recognizer is not None
                         and daemon.recognizer.stats.cache_hits > 0, what="the stranger named by the cache")
        names = retention.resolver.names
        deadline = time.monotonic() + 20
        while (await names.get(stranger)).last_seen < clock():  # the plugin noted the sighting
            assert time.monotonic() < deadline, "the cache's sighting never reached the resolver"
            await asyncio.sleep(0.05)
        clock.advance(25)  # 45 days after the resolver's own sighting, 25 after the cache's
        assert (await retention.sweep()).persons == []
        assert stranger in daemon.recognizer.cache.persons()
        daemon.request_stop()

    await run_in_loop(config, host, until=scenario)
    assert (stranger, None) not in labels.calls


def test_audit_entries_are_dated_by_their_timestamp():
    assert audit_entry_before(json.dumps({"ts": iso(100.0)}), 101.0)
    assert not audit_entry_before(json.dumps({"ts": iso(101.0)}), 101.0)
    assert not audit_entry_before(json.dumps({"ts": "2023-11-14T22:13:20"}), 1e12)  # no zone: not dated
    assert not audit_entry_before("{", 1e12) and not audit_entry_before("[]", 1e12)


def test_a_prune_never_loses_a_line_appended_meanwhile(tmp_path: Path):
    """The door appends from its worker thread while retention rewrites the log: no decision may be lost."""
    log, written, stop = tmp_path / "door-audit.jsonl", [], threading.Event()

    def door() -> None:
        while not stop.is_set() or len(written) < 200:
            append_line(log, json.dumps({"ts": iso(time.time()), "i": len(written)}) + "\n")
            written.append(len(written))

    thread = threading.Thread(target=door)
    thread.start()
    try:
        for _ in range(100):
            append_line(log, json.dumps({"ts": iso(0.0)}) + "\n")
            assert prune_lines(log, lambda line: not audit_entry_before(line, 1.0)) >= 1
    finally:
        stop.set()
        thread.join()
    assert [json.loads(line)["i"] for line in log.read_text().splitlines()] == written


def test_plugins_list_shows_retention(tmp_path: Path):
    config_file = tmp_path / "facewatchd.toml"
    config_file.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
                           '[plugins.retention]\nunnamed_person_days = 14\n')
    proc = subprocess.run([sys.executable, "-m", "facewatchd", "plugins", "list", "--json", "--config",
                           str(config_file)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    [listed] = [p for p in json.loads(proc.stdout) if p["name"] == "retention"]
    assert listed["origin"] == "builtin" and listed["version"] == "0.1.0"
    assert listed["hooks"] == ["facewatchd_config_schema", "facewatchd_start", "facewatchd_stop", "resolver_started",
                              "unknown_face"]
    bad = subprocess.run([sys.executable, "-m", "facewatchd", "check-config", "--config", str(config_file)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert bad.returncode == 0, bad.stderr
    config_file.write_text(config_file.read_text() + "crop_days = 3\n")
    bad = subprocess.run([sys.executable, "-m", "facewatchd", "check-config", "--config", str(config_file)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert bad.returncode != 0 and "plugins.retention.crop_days" in bad.stderr
