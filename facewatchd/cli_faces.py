"""`facewatchd faces …`: the operator's actions on the configured resolver (list, label, enroll, forget,
merge, move, reject), through a running daemon's control socket when one answers, else on the stores."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from facewatchd.app.config import Config, load_config
from facewatchd.config import ConfigError
from facewatchd.vision.quality import QualityConfig


def _embedded(config: Config) -> Any:
    from facewatchd.resolver.embedded import EmbeddedResolver

    if config.resolver.type != "local":
        raise ConfigError(f"faces commands for resolver type {config.resolver.type!r} need its own backend")
    # the on-prem service's own shadow store, so devices hear of a change made while it was stopped
    resolver, shadows = config.resolver, None
    if config.server is not None:  # the on-prem service's stores, exactly: its data dir and its shadows
        resolver = config.resolver.model_copy(update={"data_dir": _resolver_dir(config)})
        shadows = _resolver_dir(config) / "shadows.db"
    return EmbeddedResolver(config.device.state_dir, resolver, config.detector, config.embedder, config.identity,
                            shadows)


def _on_device_cache(config: Config, change: Callable[[Any], int]) -> int:
    """On the embedded default the device cache is on this machine: change it there too, at once."""
    path = config.device.state_dir / "cache.db"
    if not path.exists():
        return 0
    from facewatchd.pipeline.cache import FaceCache

    cache = FaceCache(path, config.cache, config.identity)
    try:
        return change(cache)
    finally:
        cache.close()


async def _faces(args: argparse.Namespace, config: Config) -> int:
    if config.resolver.type == "aws":
        return await _faces_on_aws(args, config)
    from facewatchd.control import ControlClient, socket_path

    # A running daemon or resolver service does it itself: one resolver, and devices hear of it at once.
    running = await ControlClient.connect(socket_path(_resolver_dir(config)))
    if running is not None:
        try:
            return await _faces_command(args, running, lambda: _analyzer(config), _crop_path(config),
                                        gate=config.quality)
        finally:
            await running.close()
    backend = _embedded(config)
    try:
        return await _faces_command(args, backend.resolver, lambda: backend.analyzer, _crop_path(config),
                                    None if config.server else lambda change: _on_device_cache(config, change),
                                    gate=config.quality)
    finally:
        backend.close()


def _resolver_dir(config: Config) -> Path:
    """Where the resolver of this config keeps its state: the on-prem service's data dir for a config with
    a [server] table, else the daemon's state dir."""
    if config.server is not None:
        from facewatchd.app.resolver_service import service_data_dir

        return service_data_dir(config)
    return config.device.state_dir


def _crop_path(config: Config) -> Callable[[str], str]:
    """Where a crop key of this config's resolver is: a file of the local crop store, or an S3 object."""
    if config.resolver.type == "aws":
        bucket = config.resolver.bucket
        return lambda key: f"s3://{bucket}/{key}"
    root = _resolver_dir(config) if config.server else config.resolver.data_dir or config.device.state_dir / "resolver"
    return lambda key: str(root / "crops" / key)


def _list(persons: list[Any], as_json: bool, crop_path: Callable[[str], str]) -> None:
    """Per person, most seen first: sightings (faces devices sent), tracks, first and last seen, cameras,
    a crop and the person it may be."""
    persons = sorted(persons, key=lambda p: (-p.sightings, -p.last_seen))
    if as_json:
        print(json.dumps([{"person_id": p.person_id, "name": p.name, "sightings": p.sightings, "tracks": p.tracks,
                           "first_seen": p.first_seen, "last_seen": p.last_seen, "first_seen_local": _local(p.first_seen),
                           "last_seen_local": _local(p.last_seen), "cameras": sorted(p.last_seen_on),
                           "last_seen_on": p.last_seen_on, "crop": crop_path(p.crop_key) if p.crop_key else None,
                           "possibly": p.possibly, "faces": len(p.faces), "face_ids": p.faces,
                           "templates": p.templates, "things": p.things} for p in persons], indent=2))
        return
    for p in persons:
        tracks = "?" if p.tracks is None else p.tracks
        maybe = f" possibly={p.possibly}" if p.possibly else ""
        print(f"{p.person_id}  {p.name or '-':<24} sightings={p.sightings} tracks={tracks} "
              f"first={_local(p.first_seen)} last={_local(p.last_seen)} cameras={','.join(sorted(p.last_seen_on)) or '-'}"
              f"{maybe}\n    crop: {crop_path(p.crop_key) if p.crop_key else '-'}")
    if not persons:
        print("no persons yet")
    elif any(p.tracks is None and p.sightings for p in persons):
        print("tracks=?: those faces were recorded before the resolver kept their track ids")


def _local(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _analyzer(config: Config) -> Any:
    from facewatchd.vision.analyzer import FaceAnalyzer

    return FaceAnalyzer(config.detector, config.embedder)


async def _faces_on_aws(args: argparse.Namespace, config: Config) -> int:
    """The same commands on the AWS resolver (S3, Rekognition, DynamoDB, IoT shadows), with this
    machine's AWS credentials; the devices hear of a label or a forget through their shadows."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ConfigError('resolver.type = "aws" needs the aws extra: pip install "facewatchd[aws]"') from None
    from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters
    from facewatchd.vision.analyzer import FaceAnalyzer

    aws = config.resolver
    assert isinstance(aws, AwsResolverConfig)
    try:
        async with open_aws_adapters(aws) as adapters:
            return await _faces_command(args, adapters.resolver(aws),
                                        lambda: FaceAnalyzer(config.detector, config.embedder), _crop_path(config),
                                        gate=config.quality)
    except (BotoCoreError, ClientError) as e:
        print(f"error: AWS ({aws.region}, bucket {aws.bucket}, table {aws.table}, collection {aws.collection_id}): "
              f"{e}", file=sys.stderr)
        return 1


async def _faces_command(args: argparse.Namespace, resolver: Any, analyzer: Callable[[], Any],
                         crop_path: Callable[[str], str],
                         on_cache: Callable[[Callable[[Any], int]], int] | None = None, *,
                         gate: QualityConfig | None = None) -> int:
    if args.faces_cmd == "list":
        _list(await resolver.persons(), args.json, crop_path)
    elif args.faces_cmd in {"merge", "move", "reject"}:
        return await _correct(args, resolver, on_cache)
    elif args.faces_cmd == "label":
        try:
            person = await resolver.label(args.person, args.name)
        except KeyError:
            print(f"error: no person {args.person!r} (see `facewatchd faces list`)", file=sys.stderr)
            return 1
        except ValueError as e:  # NameTaken (with the merge to make instead), or an empty name
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{person.person_id} is now {person.name!r} on {len(person.things)} device(s)")
    elif args.faces_cmd == "forget":
        try:
            person = await resolver.forget(args.person)
        except KeyError:
            print(f"error: no person {args.person!r}", file=sys.stderr)
            return 1
        cached = f", {on_cache(lambda c: c.forget(args.person))} cached view(s)" if on_cache else ""
        print(f"forgot {person.person_id} ({person.name or 'unnamed'}): {len(person.faces)} face(s){cached}, "
              f"on {len(person.things)} device(s)")
    elif args.faces_cmd == "enroll":
        return await _enroll(args, resolver, analyzer, gate or QualityConfig())
    return 0


async def _enroll(args: argparse.Namespace, resolver: Any, analyzer: Callable[[], Any], gate: QualityConfig) -> int:
    """A batch as a user has one: photos with no face, several faces or another person's face are skipped
    and listed at the end. Exit 0 when all were enrolled, 2 when some were skipped, 1 when none was enrolled."""
    photos, skipped = await asyncio.to_thread(_enroll_queries, analyzer, args.images, gate)
    enrolled = None
    if photos:
        try:
            enrolled = await resolver.enroll(args.name, [q for _, q in photos])
        except ValueError as e:  # an empty name: nothing was stored
            print(f"error: {e}", file=sys.stderr)
            return 1
        path_of = {q.face_id: path for path, q in photos}
        skipped += [(path_of[f], f"the face is {m.person_id} (similarity {m.similarity:.2f}), not a new photo of "
                     f"{args.name!r}: name or merge that person instead") for f, m in enrolled.matched.items()]
    if enrolled is not None and enrolled.person is not None:
        person = enrolled.person
        held = " (who already held the name)" if enrolled.existing else ""
        print(f"enrolled {person.person_id} as {person.name!r}{held} from {len(enrolled.added)} photo(s)")
        rest = "; the others are kept as faces only" if enrolled.templates_added < len(enrolled.added) else ""
        print(f"kept {enrolled.templates_added} of {len(enrolled.added)} photo(s) as templates (limit "
              f"{enrolled.templates_limit} per person; {person.person_id} has {person.templates}){rest}")
    if skipped:
        print(f"skipped {len(skipped)} of {len(args.images)} photo(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    if enrolled is None or enrolled.person is None:
        print(f"error: no photo enrolled for {args.name!r}; nothing was changed", file=sys.stderr)
        return 1
    return 2 if skipped else 0


async def _correct(args: argparse.Namespace, resolver: Any,
                   on_cache: Callable[[Callable[[Any], int]], int] | None) -> int:
    """The operator's corrections: merge two persons, move a face to another person, reject a face."""
    try:
        if args.faces_cmd == "merge":
            person = await resolver.merge(args.keep, args.gone)
            cached = on_cache(lambda c: c.merge(args.gone, args.keep, person.name)) if on_cache else 0
            print(f"merged {args.gone} into {person.person_id} ({person.name or 'unnamed'}): {len(person.faces)} "
                  f"face(s), {cached} cached view(s) moved, on {len(person.things)} device(s)")
        elif args.faces_cmd == "move":
            person = await resolver.move(args.face, args.person)
            cached = on_cache(lambda c: len(c.resolve(args.face, person.person_id, person.name))) if on_cache else 0
            print(f"moved face {args.face} to {person.person_id} ({person.name or 'unnamed'}), "
                  f"{cached} cached view(s), on {len(person.things)} device(s)")
        else:
            person = await resolver.reject(args.face)
            cached = on_cache(lambda c: c.reject(args.face)) if on_cache else 0
            print(f"face {args.face} is no longer {person.person_id} ({person.name or 'unnamed'}): "
                  f"{cached} cached view(s) dropped")
    except KeyError as e:
        print(f"error: no such person or face {e.args[0]!r} (see `facewatchd faces list --json`)", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _enroll_queries(analyzer: Callable[[], Any], images: list[str], gate: QualityConfig) \
        -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """Each photo's one face as an enrolment query, and the photos skipped with why (no face, several, or a
    face the quality gate keeps back: it would be a template that names nobody). Progress goes to stderr,
    one line a photo, when there is more than one."""
    import time

    from facewatchd.messages import FaceQuery
    from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
    from facewatchd.vision.analyzer import ImageError, read_image

    face_analyzer = analyzer()  # loads the models: in this worker thread, never on the event loop
    queries: list[tuple[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for i, path in enumerate(images, 1):
        try:
            image = read_image(path)
            faces = face_analyzer.faces(image)
        except ImageError as e:
            faces, reason = [], str(e)
        else:
            reason = "no face found" if not faces else f"expected exactly one face, found {len(faces)}"
        if len(faces) == 1 and (why := gate.failures(faces[0].quality)):
            faces, reason = [], f"the face is not worth naming ({', '.join(why)}: see [quality])"
        if len(faces) == 1:
            f = faces[0]
            queries.append((path, FaceQuery(str(uuid.uuid4()), "", "enroll", "enroll",
                                            face_crop_jpeg(image, f.face, UplinkConfig()), f.embedding, time.time())))
        else:
            skipped.append((path, reason))
        if len(images) > 1:
            print(f"[{i}/{len(images)}] {path}: {'face found' if len(faces) == 1 else reason}", file=sys.stderr,
                  flush=True)
    return queries, skipped


def cmd_faces(args: argparse.Namespace) -> int:
    return asyncio.run(_faces(args, load_config(args.config)))


def add_faces_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """The `faces` subcommands, on the main parser's subparsers."""
    faces = sub.add_parser("faces", help="persons known to the resolver").add_subparsers(dest="faces_cmd", required=True)
    fl = with_config(faces.add_parser("list", help="list persons"))
    fl.add_argument("--json", action="store_true")
    lab = with_config(faces.add_parser("label", help="name a person on every device"))
    lab.add_argument("person")
    lab.add_argument("name")
    fg = with_config(faces.add_parser("forget", help="remove a person, their faces and crops everywhere"))
    fg.add_argument("person")
    en = with_config(faces.add_parser("enroll", help="pre-register a person from photos"))
    en.add_argument("name")
    en.add_argument("images", nargs="+")
    mg = with_config(faces.add_parser("merge", help="person GONE was person KEEP: merge it into KEEP everywhere"))
    mg.add_argument("keep")
    mg.add_argument("gone")
    mv = with_config(faces.add_parser("move", help="one face was the wrong person: move it to PERSON everywhere"))
    mv.add_argument("face")
    mv.add_argument("person")
    rj = with_config(faces.add_parser("reject", help="not this person: take the face (and what was learnt from "
                                      "it) away from its person everywhere"))
    rj.add_argument("face")
    for p in (fl, lab, fg, en, mg, mv, rj):
        p.set_defaults(func=cmd_faces)
