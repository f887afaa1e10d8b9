"""Command line: facewatchd run | check-config | resolver | shadow | stats | plugins list |
faces list|label|enroll|forget|merge|move|reject."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from facewatchd.cli_faces import add_faces_parser
from facewatchd.closed_pipe import exit_quietly_on_closed_pipe
from facewatchd.app.config import Config, load_config
from facewatchd.config import DEFAULT_CONFIG, ConfigError
from facewatchd.exit_codes import ExitCode
from facewatchd.state import PRIVATE_UMASK, StateError
from facewatchd.vision.models import ModelError
from facewatchd.web import password as web_password


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _plugins(config: Config) -> Any:
    from facewatchd.plugins import PluginHost

    host = PluginHost(config)
    host.load()
    return host


def cmd_check_config(args: argparse.Namespace) -> int:
    from facewatchd.app.config_checks import enforce

    config = _config(args)
    host = _plugins(config)
    for warning in enforce(config, host.plugin_configs):  # files, camera ids, a page in clear
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.source}: ok ({len(config.cameras)} camera(s), link {config.link.type}, "
          f"plugins: {', '.join(host.infos) or 'none'})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import structlog

    from facewatchd.app.config_checks import enforce
    from facewatchd.app.device import Daemon
    from facewatchd.logs import configure_logging

    config = _config(args)
    if args.review:  # the first hour: cameras loop, the review page is served
        from facewatchd.config import read_config_data
        from facewatchd.review_mode import review_config

        config = review_config(config, read_config_data(Path(args.config)))
        print(f"review page: http{'s' if config.web.tls_cert_file else ''}://{config.web.host}:{config.web.port}/ "
              f"(user {config.web.user}); Ctrl-C stops", file=sys.stderr, flush=True)
    configure_logging(config.logging.format, config.logging.level)
    host = _plugins(config)
    for warning in enforce(config, host.plugin_configs):  # refused as check-config refuses it, before anything starts
        structlog.get_logger("facewatchd.config").warning("config_warning", problem=warning)
    if not config.cameras:
        print(f"error: {config.source}: no [[cameras]] table: facewatchd run needs a camera", file=sys.stderr)
        return ExitCode.NO_CAMERAS
    daemon = Daemon(config, host)
    summary = asyncio.run(daemon.run())
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    if daemon.cameras_never_up:
        print("error: " + "; ".join(f"camera {c.camera}: {c.reason}" for c in daemon.cameras_never_up),
              file=sys.stderr)
        return ExitCode.CAMERA_NEVER_UP
    return ExitCode.OK


def cmd_resolver(args: argparse.Namespace) -> int:
    from facewatchd.logs import configure_logging
    from facewatchd.app.resolver_service import run_resolver

    config = _config(args)
    configure_logging(config.logging.format, config.logging.level)
    stats = asyncio.run(run_resolver(config))
    print(json.dumps({"received": stats.received, "resolved": stats.resolved, "failed": stats.failed,
                      "skipped": dict(stats.skipped)}, sort_keys=True), flush=True)
    return 0


def cmd_resolver_migrate(args: argparse.Namespace) -> int:
    """`facewatchd resolver migrate --from sqlite DIR --to postgresql DSN`, with a count check at the end."""
    from facewatchd.logs import configure_logging
    from facewatchd.resolver.postgres.migrate import migrate_sqlite

    configure_logging("auto", "warning")  # stderr; stdout is the count check
    (source_kind, source), (target_kind, dsn) = args.source, args.target
    if (source_kind, target_kind) != ("sqlite", "postgresql"):
        print(f"error: can migrate --from sqlite DIR --to postgresql DSN, not from {source_kind} to {target_kind}",
              file=sys.stderr)
        return 2
    try:
        moved = asyncio.run(migrate_sqlite(Path(source), dsn))
    except (FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for m in moved:
        print(f"{m.kind:<10} {m.source:>8} in the source, {m.present:>8} in PostgreSQL  {'ok' if m.ok else 'MISSING'}")
    return 0 if all(m.ok for m in moved) else 1


def cmd_shadow(args: argparse.Namespace) -> int:
    from facewatchd.logs import configure_logging
    from facewatchd.app.resolver_service import run_shadow

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
        raise ConfigError(f"{config.source}: web: set password_hash or password_file (facewatchd web-password)")
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
    from facewatchd.app.plugin_catalog import as_json, as_text, catalog

    entries = catalog(_plugins(_config(args)))
    print(json.dumps(as_json(entries), indent=2) if args.json else as_text(entries))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facewatchd", description="Edge face recognition daemon")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
        return p

    run = with_config(sub.add_parser("run", help="run the daemon"))
    run.add_argument("--review", action="store_true", help="the first hour: file cameras loop until Ctrl-C and the "
                     "review page is served (its password asked for once, kept hashed in <state_dir>/web-password)")
    run.set_defaults(func=cmd_run)
    with_config(sub.add_parser("check-config", help="validate a config file")).set_defaults(func=cmd_check_config)
    resolver = with_config(sub.add_parser("resolver", help="run the on-prem resolver service over MQTT ([server] "
                                          "table; with the shadow service unless run_shadow_service = false)"))
    resolver.set_defaults(func=cmd_resolver)
    migrate = resolver.add_subparsers(dest="resolver_cmd").add_parser(
        "migrate", help="move a SQLite resolver's collection, names, crops and shadows into PostgreSQL")
    migrate.add_argument("--from", dest="source", nargs=2, metavar=("sqlite", "DIR"), required=True)
    migrate.add_argument("--to", dest="target", nargs=2, metavar=("postgresql", "DSN"), required=True)
    migrate.set_defaults(func=cmd_resolver_migrate)
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
    pl = with_config(plugins.add_parser("list", help="the built-ins that can be turned on, and the loaded plugins"))
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins_list)

    web_password.add_arguments(sub.add_parser("web-password", help="hash a password for the review page ([web])",
                                              description=web_password.DESCRIPTION)).set_defaults(func=web_password.run)

    add_faces_parser(sub, with_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Faces are personal data: whatever this process writes (state, crops, databases) is the owner's only.
    os.umask(PRIVATE_UMASK)
    try:
        with exit_quietly_on_closed_pipe():
            return int(args.func(args))
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return ExitCode.CONFIG
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.STATE  # the units' RestartPreventExitStatus, so damaged state is no crash loop
    except ModelError as e:  # a missing or damaged model file: say which, never a traceback
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.CONFIG
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
