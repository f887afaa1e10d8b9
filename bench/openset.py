#!/usr/bin/env python3
"""Open-set identification at scale: how often a stranger is named as someone, as the gallery grows.

LFW-style folders (one per person). One photo each of G people is enrolled through the product's own
path (`Resolver.enroll`, what `facewatchd faces enroll` runs, over the local adapters); people with two
or more photos come first, so their second photo is a mated probe. Strangers are one photo each of the
people outside the gallery. Every probe is decided by `Resolver.identify`, the decision the resolver
core acts on (search the collection, then `facewatchd.identity.decide`):

  FPIR  share of strangers named as some enrolled person
  FNIR  share of mated probes not named as their own person (not named, or named as someone else)

Faces: YuNet, the face nearest the image centre (LFW photos are centred on their person; the others are
bystanders), SFace aligned, embedded plain and mirrored, so the rows with and without flip averaging
come from one pass. A few LFW names are the same person under two spellings (known label errors, see
ALIASES): they count as one person, never as strangers to each other.

Rows: the landed rule (fixed 0.363, no flip), fixed thresholds, and the default configuration
([identity] and [embedder] defaults: flip averaging, the naming threshold rising with the number of
persons) for naming, and at the door plugin's unlock threshold. A table, then one JSON line whose `fpir`
and `fnir` are the default configuration's at --gallery.

    .venv/bin/python bench/openset.py --images ../shared/data/lfw-dev/images --gallery 1000

--collection postgresql runs the same core over the PostgreSQL adapters (pgvector's HNSW `<=>` search, on a
throwaway server from the pgserver wheel, one database a gallery) instead of the SQLite matrix: the identity
rule is the same in every adapter, so the figures must be too (but for what an approximate index misses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import cv2
import numpy as np

from facewatchd.identity import IdentityConfig
from facewatchd.logs import configure_logging
from facewatchd.messages import FaceQuery
from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.embedded import EmbeddedResolver
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.vision.detector import DetectorConfig, Face, YuNetDetector
from facewatchd.vision.embedder import EmbedderConfig, SFaceEmbedder, mirrored, normalise

SIZES = (100, 300, 1000)
# Known LFW label errors: one person under two names (each pair's photos match at cosine 0.67-0.92).
ALIASES = {"Hasan_Wirayuda": "Hassan_Wirajuda", "Chyung_Dai-chul": "Dai_Chul_Chyung",
           "Cristina_Kirchner": "Cristina_Fernandez", "Martha_Bowen": "Gabrielle_Rose"}


@dataclass(frozen=True)
class Photo:
    person: str
    crop: bytes
    plain: np.ndarray
    flipped: np.ndarray  # normalise(plain + mirror): what the embedder returns with flip = true

    def query(self, flip: bool) -> FaceQuery:
        return FaceQuery(str(uuid.uuid4()), "bench", "bench", "bench", self.crop,
                         self.flipped if flip else self.plain, time.time())


def centre_face(faces: list[Face], image: np.ndarray) -> Face:
    h, w = image.shape[:2]
    return min(faces, key=lambda f: (f.box[0] + f.box[2] / 2 - w / 2) ** 2 + (f.box[1] + f.box[3] / 2 - h / 2) ** 2)


def load(images: Path) -> tuple[dict[str, list[Photo]], int]:
    detector = YuNetDetector(DetectorConfig())
    embedder = SFaceEmbedder(EmbedderConfig(flip=False))
    people: dict[str, list[Photo]] = {}
    missed = 0
    for path in sorted(images.glob("*/*.jpg")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        faces = detector.detect(image) if image is not None else []
        if not faces:
            missed += 1
            continue
        face = centre_face(faces, image)
        aligned = embedder.align(image, face)
        plain = embedder.embed_aligned(aligned)
        flipped = normalise(plain + embedder.embed_aligned(mirrored(aligned)))
        person = ALIASES.get(path.parent.name, path.parent.name)
        people.setdefault(person, []).append(Photo(person, face_crop_jpeg(image, face, UplinkConfig()), plain,
                                                   flipped))
    return people, missed


@dataclass(frozen=True)
class Rule:
    name: str
    flip: bool
    identity: IdentityConfig
    at_least: float = 0.0  # also require this similarity (the door's unlock threshold)


def rules(door_threshold: float) -> list[Rule]:
    default = IdentityConfig()
    fixed = lambda t: IdentityConfig(name_threshold=t, new_below=min(t, 0.363), learn_threshold=max(t, 0.55),
                                     fpir=None)  # noqa: E731
    return [Rule("landed: fixed 0.363, no flip", False, fixed(0.363)),
            Rule("fixed 0.45, no flip", False, fixed(0.45)),
            Rule("fixed 0.50, no flip", False, fixed(0.50)),
            Rule("fixed 0.45, flip", True, fixed(0.45)),
            Rule("default", EmbedderConfig().flip, default),
            *(Rule(f"default + door {t:g}", EmbedderConfig().flip, default, t)
              for t in sorted({door_threshold, 0.50, 0.52, 0.54}))]


async def _enrolled(backend: Any, name: str, query: FaceQuery) -> str | None:
    """The gallery person's id; None when the photo is already named as another gallery person (the resolver
    refuses such an enrolment: one face, one identity), so that person is never found."""
    enrollment = await backend.resolver.enroll(name, [query])
    return enrollment.person.person_id if enrollment.person else None


class NoDevices:
    """The shadow port of a bench that has no devices: enrolments name nobody's cache."""

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        return None


class PostgresBackend:
    """The resolver core over the PostgreSQL adapters, in a new database of `server`."""

    def __init__(self, server: Any) -> None:
        self._server, self._stack = server, contextlib.AsyncExitStack()

    async def __aenter__(self) -> "PostgresBackend":
        from facewatchd.resolver.postgres.config import PostgresResolverConfig
        from facewatchd.resolver.postgres.stores import PostgresResolverStores
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' database helper, as a script
        from tests.support.postgres import fresh_database

        stores = await self._stack.enter_async_context(PostgresResolverStores(
            PostgresResolverConfig(dsn=fresh_database(self._server)), lambda _: None))  # probes carry their own
        self.resolver = Resolver(stores.crops, stores.collection, stores.names, NoDevices(), IdentityConfig(),
                                 LocalResolverConfig().templates_per_person, deciding=stores.deciding)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def backend(postgres: Any, folder: Path) -> AsyncIterator[Any]:
    """The SQLite and files resolver of the embedded default, or (with a server) the PostgreSQL one."""
    if postgres is not None:
        async with PostgresBackend(postgres) as pg:
            yield pg
        return
    embedded = EmbeddedResolver(folder, LocalResolverConfig())
    try:
        yield embedded
    finally:
        embedded.close()


async def measure(people: dict[str, list[Photo]], order: list[str], size: int, all_rules: list[Rule],
                  work: Path, postgres: Any = None) -> dict[str, dict[str, Any]]:
    gallery, strangers = order[:size], order[size:]
    mated = [p for p in gallery if len(people[p]) >= 2]
    out: dict[str, dict[str, Any]] = {}
    for flip in sorted({r.flip for r in all_rules}):
        async with backend(postgres, work / f"g{size}-{int(flip)}") as resolver:
            ids = {p: await _enrolled(resolver, p, people[p][0].query(flip)) for p in gallery}
            for rule in (r for r in all_rules if r.flip == flip):
                resolver.resolver.identity = rule.identity

                async def named(photo: Photo) -> str | None:
                    d = await resolver.resolver.identify(photo.query(flip))
                    return d.person_id if d.named and d.similarity >= rule.at_least else None

                false_ids = [await named(people[p][0]) for p in strangers]
                mated_ids = [await named(people[p][1]) for p in mated]
                fpir = sum(x is not None for x in false_ids) / max(1, len(strangers))
                fnir = sum(x != ids[p] for x, p in zip(mated_ids, mated)) / max(1, len(mated))
                misnamed = sum(x is not None and x != ids[p] for x, p in zip(mated_ids, mated)) / max(1, len(mated))
                out[rule.name] = {"fpir": round(fpir, 4), "fnir": round(fnir, 4), "misnamed": round(misnamed, 4),
                                  "threshold": round(max(rule.identity.naming_threshold(size), rule.at_least), 3),
                                  "strangers": len(strangers), "mated": len(mated)}
    return out


def door_unlock_threshold() -> float:
    try:
        from plugins.door import DoorConfig
    except ImportError:
        return 0.5
    return float(DoorConfig.model_fields["unlock_threshold"].default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="one subfolder of photos per person")
    parser.add_argument("--gallery", type=int, default=1000, help="the gallery size of the final JSON line")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--collection", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the collection the gallery is searched in (default: the embedded default's)")
    args = parser.parse_args()
    if not args.images.is_dir():
        parser.error(f"not a folder: {args.images}")
    cv2.setNumThreads(1)
    configure_logging("json", "error")
    started = time.perf_counter()
    people, missed = load(args.images)
    rng = np.random.default_rng(args.seed)
    multi = sorted(p for p in people if len(people[p]) >= 2)
    single = sorted(p for p in people if len(people[p]) == 1)
    rng.shuffle(multi)
    rng.shuffle(single)
    order = multi + single
    sizes = sorted({s for s in (*SIZES, args.gallery) if s < len(order)})
    if args.gallery not in sizes:
        raise SystemExit(f"--gallery {args.gallery}: only {len(order)} people with a face, need more than that")
    all_rules = rules(door_unlock_threshold())
    with tempfile.TemporaryDirectory(prefix="openset-") as tmp, contextlib.ExitStack() as stack:
        postgres = None
        if args.collection == "postgresql":
            from facewatchd.resolver.postgres.server import LocalPostgres

            Path(tmp).chmod(0o755)  # as root the server runs as nobody, who must reach its folder
            postgres = stack.enter_context(LocalPostgres(Path(tmp) / "postgres", durable=False))
        results = {size: asyncio.run(measure(people, order, size, all_rules, Path(tmp), postgres)) for size in sizes}
    print(f"{len(people)} people ({len(multi)} with 2+ photos), {missed} photos without a face; "
          f"FPIR / FNIR in % (misnamed: mated probes named as someone else), naming threshold in brackets")
    print(f"{'rule':<32}" + "".join(f"{'G=' + str(s):>24}" for s in sizes))
    for rule in all_rules:
        cells = [results[s][rule.name] for s in sizes]
        print(f"{rule.name:<32}" + "".join(
            f"{c['fpir'] * 100:>7.1f} / {c['fnir'] * 100:>4.1f} ({c['misnamed'] * 100:.1f}) [{c['threshold']:.2f}]"
            for c in cells))
    final = results[args.gallery]["default"]
    door = results[args.gallery][f"default + door {door_unlock_threshold():g}"]
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(json.dumps({"fpir": final["fpir"], "fnir": final["fnir"], "gallery": args.gallery,
                      "collection": args.collection,
                      "door": {"fpir": door["fpir"], "fnir": door["fnir"], "threshold": door["threshold"]},
                      "table": {str(s): results[s] for s in sizes}}))


if __name__ == "__main__":
    main()
