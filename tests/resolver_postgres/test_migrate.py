"""`facewatchd resolver migrate --from sqlite DIR --to postgresql DSN` on a real SQLite resolver's data and a
real PostgreSQL: persons, faces, templates, crops and shadows arrive, the collection finds the same person
with the same similarity, the counts are checked, and running it again changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from facewatchd.identity import IdentityConfig
from facewatchd.link.local import HubShadowPort, ShadowHub
from facewatchd.messages import FaceQuery, new_face_id
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.local import LocalResolverStores
from facewatchd.resolver.mqtt_adapter import CropEmbedder
from facewatchd.resolver.postgres.config import PostgresResolverConfig
from facewatchd.resolver.postgres.stores import PostgresResolverStores
from facewatchd.shadow.store import ShadowStore
from tests.support.daemon import cli
from tests.support.faces import stranger_crop

pytestmark = pytest.mark.timeout(120)


def device_query(sitter: int, thing: str = "door-1") -> FaceQuery:
    return FaceQuery(new_face_id(), thing, "cam", f"t{sitter}", stranger_crop(sitter), None, time.time())


async def test_a_sqlite_resolver_moves_to_postgresql_with_its_counts_checked(tmp_path: Path, postgres_dsn: str) -> None:
    data, embedder = tmp_path / "resolver", CropEmbedder()
    stores = LocalResolverStores(data, embedder)
    with ShadowStore(data / "shadows.db") as shadows:
        resolver = Resolver(stores.crops, stores.collection, stores.names, HubShadowPort(ShadowHub(shadows)),
                            IdentityConfig())
        answers = [await resolver.resolve(device_query(i)) for i in (0, 1, 2)]
        await resolver.label(answers[0].person_id, "Marie Curie")
        before = {p.person_id: (p.name, p.faces, p.templates) for p in await stores.names.list()}
        probe = device_query(0, "door-2")
        expected = await stores.collection.search(probe, 0.3)
    stores.close()

    done = cli("resolver", "migrate", "--from", "sqlite", str(data), "--to", "postgresql", postgres_dsn)
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["persons", "faces", "templates", "crops", "shadows"]
    assert all(line.endswith("ok") for line in lines), done.stdout
    assert "3 in the source,        3 in PostgreSQL" in lines[0]

    async with PostgresResolverStores(PostgresResolverConfig(dsn=postgres_dsn), embedder) as pg:
        assert {p.person_id: (p.name, p.faces, p.templates) for p in await pg.names.list()} == before
        found = await pg.collection.search(probe, 0.3)
        assert (found.person_id, round(found.similarity, 4)) == (expected.person_id, round(expected.similarity, 4))
        face = await pg.names.face(answers[1].face_id)
        assert await pg.crops.read(face.crop_key) == stranger_crop(1)
        with pg.open_shadow_store() as shadows:
            assert shadows.get("door-1").desired["faces"]

    again = cli("resolver", "migrate", "--from", "sqlite", str(data), "--to", "postgresql", postgres_dsn)
    assert again.stdout == done.stdout  # a second run changes nothing


def test_a_folder_without_a_resolver_is_a_clear_error(tmp_path: Path, postgres_dsn: str) -> None:
    done = cli("resolver", "migrate", "--from", "sqlite", str(tmp_path), "--to", "postgresql", postgres_dsn,
               check=False)
    assert done.returncode == 1 and "no resolver.db here" in done.stderr
