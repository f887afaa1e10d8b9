"""`python -m facewatchd.resolver.postgres.trial [FOLDER]`: a PostgreSQL with pgvector on this machine, for
trying the PostgreSQL resolver on one box. It prints the DSN to put in `[resolver] dsn` and runs until
Ctrl-C; its data stays in FOLDER (default `.state/postgres`), so the next start finds the same persons."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from facewatchd.resolver.postgres.server import LocalPostgres


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facewatchd.resolver.postgres.trial", description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".state/postgres"))
    parser.add_argument("--port", type=int, default=5432)
    args = parser.parse_args(argv)
    with LocalPostgres(args.folder.resolve(), args.port) as server:
        print(f"PostgreSQL with pgvector is up. In your config:\n\n[resolver]\ntype = \"postgresql\"\n"
              f"dsn = \"{server.dsn}\"\n\nCtrl-C stops it; its data stays in {server.folder}.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
