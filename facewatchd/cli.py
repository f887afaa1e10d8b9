"""Command line: facewatchd run | check-config | resolver | shadow | stats | plugins list |
faces list|label|enroll|forget|merge|move|reject."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from facewatchd.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from facewatchd.state import PRIVATE_UMASK, StateError
from facewatchd.vision.models import ModelError


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _plugins(config: Config) -> Any:
    from facewatchd.plugins import PluginHost

    host = PluginHost(config)
    host.load()
    return host


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    host = _plugins(config)
    print(f"{config.source}: ok ({len(config.cameras)} camera(s), link {config.link.type}, "
          f"plugins: {', '.join(host.infos) or 'none'})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from facewatchd.daemon import Daemon
    from facewatchd.logs import configure_logging

    config = _config(args)
    configure_logging(config.logging.format, config.logging.level)
    host = _plugins(config)
    summary = asyncio.run(Daemon(config, host).run())
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    return 0


def cmd_resolver(args: argparse.Namespace) -> int:
    from facewatchd.logs import configure_logging
    from facewatchd.resolver.service import run_resolver

    config = _config(args)
    configure_logging(config.logging.format, config.logging.level)
    stats = asyncio.run(run_resolver(config))
    print(json.dumps({"received": stats.received, "resolved": stats.resolved, "failed": stats.failed,
                      "skipped": dict(stats.skipped)}, sort_keys=True), flush=True)
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    from facewatchd.logs import configure_logging
    from facewatchd.resolver.service import run_shadow

    config = _config(args)
    configure_logging(config.logging.format, config.logging.level)
    asyncio.run(run_shadow(config))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The review page for the AWS resolver (a daemon or `facewatchd resolver` serves its own)."""
    from facewatchd.logs import configure_logging

    config = _config(args)
    configure_logging(config.logging.format, config.logging.level)
    if config.resolver.type != "aws":
        raise ConfigError(f"{config.source}: facewatchd ui is for resolver.type = \"aws\"; with the local resolver "
                          "the daemon (or facewatchd resolver) serves the review page itself ([web])")
    if not config.web.enabled:
        raise ConfigError(f"{config.source}: web: set password_hash or password_file (python -m facewatchd.web)")
    asyncio.run(_ui_on_aws(config))
    return 0


async def _ui_on_aws(config: Config) -> None:
    import signal

    from facewatchd.resolver.aws import AwsResolverConfig, open_aws_adapters
    from facewatchd.state import private_dir
    from facewatchd.web import WebServer

    aws = config.resolver
    assert isinstance(aws, AwsResolverConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_aws_adapters(aws) as adapters, \
            WebServer(config.web, adapters.resolver(aws), private_dir(config.device.state_dir)):
        await stop.wait()


def cmd_plugins_list(args: argparse.Namespace) -> int:
    host = _plugins(_config(args))
    rows = [{"name": i.name, "origin": i.origin, "module": i.module, "hooks": i.hooks,
             "version": i.manifest.get("version")} for i in host.infos.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<16} {r['origin']:<12} {r['module']:<28} {', '.join(r['hooks'])}")
        if not rows:
            print("no plugins loaded")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Footfall from the analytics plugin's database: a table, and with --plot a chart."""
    from plugins.analytics import AnalyticsConfig, db_path
    from plugins.analytics.report import plot, table
    from plugins.analytics.store import AnalyticsStore

    config = _config(args)
    section = _plugins(config).plugin_configs.get("analytics") or AnalyticsConfig()
    path = db_path(config, section)
    try:
        store = AnalyticsStore(path, None, read_only=True)
    except FileNotFoundError:
        print(f"error: {path}: no analytics database yet (enable [plugins.analytics] and run the daemon)",
              file=sys.stderr)
        return 1
    try:
        print(table(store, args.since, args.camera))
        if args.plot:
            try:
                plot(store, args.since, args.camera, args.plot)
            except ImportError:
                print('error: --plot needs matplotlib: pip install "facewatchd[analytics]"', file=sys.stderr)
                return 1
            except OSError as e:
                print(f"error: {args.plot}: {e.strerror or e}", file=sys.stderr)
                return 1
            print(f"chart: {args.plot}")
    finally:
        store.close()
    return 0


def _since(text: str) -> float:
    from plugins.analytics.report import parse_since

    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- faces: operator actions on the configured resolver -------------------------------------------
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
            return await _faces_command(args, running, lambda: _analyzer(config))
        finally:
            await running.close()
    backend = _embedded(config)
    try:
        return await _faces_command(args, backend.resolver, lambda: backend.analyzer,
                                    None if config.server else lambda change: _on_device_cache(config, change))
    finally:
        backend.close()


def _resolver_dir(config: Config) -> Path:
    """Where the resolver of this config keeps its state: the on-prem service's data dir for a config with
    a [server] table, else the daemon's state dir."""
    if config.server is not None:
        from facewatchd.resolver.service import service_data_dir

        return service_data_dir(config)
    return config.device.state_dir


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
                                        lambda: FaceAnalyzer(config.detector, config.embedder))
    except (BotoCoreError, ClientError) as e:
        print(f"error: AWS ({aws.region}, bucket {aws.bucket}, table {aws.table}, collection {aws.collection_id}): "
              f"{e}", file=sys.stderr)
        return 1


async def _faces_command(args: argparse.Namespace, resolver: Any, analyzer: Callable[[], Any],
                         on_cache: Callable[[Callable[[Any], int]], int] | None = None) -> int:
    if args.faces_cmd == "list":
        persons = await resolver.persons()
        if args.json:
            print(json.dumps([{"person_id": p.person_id, "name": p.name, "faces": len(p.faces),
                               "face_ids": p.faces, "templates": p.templates, "possibly": p.possibly,
                               "things": p.things, "first_seen": p.first_seen, "last_seen": p.last_seen}
                              for p in persons], indent=2))
        else:
            for p in persons:
                maybe = f" possibly={p.possibly}" if p.possibly else ""
                print(f"{p.person_id}  {p.name or '-':<24} faces={len(p.faces)} things={','.join(p.things)}{maybe}")
            if not persons:
                print("no persons yet")
    elif args.faces_cmd in {"merge", "move", "reject"}:
        return await _correct(args, resolver, on_cache)
    elif args.faces_cmd == "label":
        try:
            person = await resolver.label(args.person, args.name)
        except KeyError:
            print(f"error: no person {args.person!r} (see `facewatchd faces list`)", file=sys.stderr)
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
        queries = await asyncio.to_thread(_enroll_queries, analyzer, args.images)
        if isinstance(queries, str):
            print(f"error: {queries}", file=sys.stderr)
            return 1
        person = await resolver.enroll(args.name, queries)
        print(f"enrolled {person.person_id} as {person.name!r} from {len(queries)} photo(s)")
    return 0


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


def _enroll_queries(analyzer: Callable[[], Any], images: list[str]) -> list[Any] | str:
    import time

    from facewatchd.messages import FaceQuery
    from facewatchd.pipeline.uplink import UplinkConfig, face_crop_jpeg
    from facewatchd.vision.analyzer import ImageError, read_image

    face_analyzer = analyzer()  # loads the models: in this worker thread, never on the event loop
    queries = []
    for path in images:
        try:
            image = read_image(path)
        except ImageError as e:
            return f"{path}: {e}"
        faces = face_analyzer.faces(image)
        if len(faces) != 1:
            return f"{path}: expected exactly one face, found {len(faces)}"
        f = faces[0]
        queries.append(FaceQuery(str(uuid.uuid4()), "", "enroll", "enroll", face_crop_jpeg(image, f.face, UplinkConfig()),
                                 f.embedding, time.time()))
    return queries


def cmd_faces(args: argparse.Namespace) -> int:
    return asyncio.run(_faces(args, _config(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facewatchd", description="Edge face recognition daemon")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return p

    with_config(sub.add_parser("run", help="run the daemon")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("check-config", help="validate a config file")).set_defaults(func=cmd_check_config)
    with_config(sub.add_parser("resolver", help="run the on-prem resolver service over MQTT ([server] table; "
                               "with the shadow service unless run_shadow_service = false)")
                ).set_defaults(func=cmd_resolver)
    with_config(sub.add_parser("shadow", help="run only the shadow service over MQTT ([server] table)")
                ).set_defaults(func=cmd_shadow)
    with_config(sub.add_parser("ui", help="serve the review page for the AWS resolver ([web] table)")
                ).set_defaults(func=cmd_ui)

    st = with_config(sub.add_parser("stats", help="footfall from the analytics plugin: visits, unique visitors, "
                                    "dwell per camera and hour"))
    st.add_argument("--since", type=_since, help="ISO date or date-time (local time), or back from now: 90m, 24h, 7d")
    st.add_argument("--camera", help="one camera id")
    st.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw visits per hour and dwell as a PNG")
    st.set_defaults(func=cmd_stats)

    plugins = sub.add_parser("plugins", help="plugins").add_subparsers(dest="plugins_cmd", required=True)
    pl = with_config(plugins.add_parser("list", help="loaded plugins and their hooks"))
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins_list)

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
    return parser


EXIT_STATE = 78  # EX_CONFIG: the units' RestartPreventExitStatus, so damaged state is no crash loop


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Faces are personal data: whatever this process writes (state, crops, databases) is the owner's only.
    os.umask(PRIVATE_UMASK)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_STATE
    except ModelError as e:  # a missing or damaged model file: say which, never a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
