"""ShadowStore: SQLite persistence of shadow documents, keyed by thing and shadow name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from facewatchd.shadow.document import ShadowError
from facewatchd.shadow.store import TOMBSTONE_TTL_S, ShadowStore

T0 = 1_700_000_000


def test_documents_survive_reopening_the_database(tmp_path: Path) -> None:
    path = tmp_path / "shadows.db"
    with ShadowStore(path) as store:
        store.update("cam-1", {"state": {"reported": {"a": 1}}}, now=T0)
        store.update("cam-1", {"state": {"desired": {"a": 2, "n": {"x": [1, 2]}}}}, now=T0 + 1)
        store.update("cam-1", {"state": {"desired": {"mode": "eco"}}}, shadow_name="config", now=T0 + 2)
        before = store.get("cam-1").get_response(now=T0 + 3)
    with ShadowStore(path) as store:
        doc = store.get("cam-1")
        assert doc is not None and doc.get_response(now=T0 + 3) == before
        assert doc.delta_state() == {"a": 2, "n": {"x": [1, 2]}}
        named = store.get("cam-1", "config")
        assert named is not None and named.desired == {"mode": "eco"} and named.version == 1
        assert store.get("cam-2") is None
        # the version carries on after reopening, and is enforced
        assert store.update("cam-1", {"state": {"reported": {"a": 2}}, "version": 2}, now=T0 + 4).accepted["version"] == 3
        with pytest.raises(ShadowError) as e:
            store.update("cam-1", {"state": {"reported": {"a": 3}}, "version": 2}, now=T0 + 5)
        assert e.value.code == 409


def test_wal_mode_and_a_rejected_update_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shadows.db"
    with ShadowStore(path) as store:
        store.update("cam-1", {"state": {"desired": {"a": 1}}}, now=T0)
        with pytest.raises(ShadowError):
            store.update("cam-1", {"state": {"desired": {"big": "x" * 9000}}}, now=T0 + 1)
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM shadows WHERE thing = 'cam-1'").fetchone()[0] == 1
    finally:
        raw.close()


def test_classic_and_named_shadows_are_separate() -> None:
    with ShadowStore(":memory:") as store:
        store.update("cam-1", {"state": {"desired": {"a": 1}}}, now=T0)
        store.update("cam-1", {"state": {"desired": {"a": 2}}}, shadow_name="labels", now=T0)
        assert store.get("cam-1").desired == {"a": 1}
        assert store.get("cam-1", "labels").desired == {"a": 2}


def test_delete_returns_accepted_payload_then_404_and_version_continues(tmp_path: Path) -> None:
    with ShadowStore(tmp_path / "s.db") as store:
        store.update("cam-1", {"state": {"desired": {"a": 1}}}, now=T0)
        store.update("cam-1", {"state": {"desired": {"a": 2}}}, now=T0 + 1)
        assert store.delete("cam-1", request={"clientToken": "d1"}, now=T0 + 2) == {
            "version": 2, "timestamp": T0 + 2, "clientToken": "d1"}
        assert store.get("cam-1") is None
        with pytest.raises(ShadowError) as e:
            store.delete("cam-1", now=T0 + 3)
        assert e.value.code == 404 and e.value.message == "No shadow exists with name: 'cam-1'"
        with pytest.raises(ShadowError) as e:
            store.delete("cam-1", "labels", now=T0 + 3)
        assert e.value.message == "No shadow exists with name: 'cam-1~labels'"
        # AWS: re-created within 48 h, the version follows the deleted one's; later it starts over
        r = store.update("cam-1", {"state": {"desired": {"b": 1}}}, now=T0 + 4)
        assert r.accepted["version"] == 3 and r.documents["previous"] is None
        store.delete("cam-1", now=T0 + 5)
        r = store.update("cam-1", {"state": {"desired": {"b": 1}}}, now=T0 + 5 + TOMBSTONE_TTL_S)
        assert r.accepted["version"] == 1
