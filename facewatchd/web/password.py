"""`facewatchd web-password` (also `python -m facewatchd.web`): asks for the review page's password twice and
prints the line to paste into `[web]`. `--stdin` reads it from a pipe, for scripts; `--hash-only` prints just the
hash, for a `password_file`. Empty and short passwords are refused: naming a person can open a door.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Sequence

from facewatchd.exit_codes import ExitCode
from facewatchd.web.auth import hash_password

MIN_LENGTH = 8  # NIST SP 800-63B's least for a chosen password; five tries a minute make guessing slow


class PasswordRefused(ValueError):
    """A password that cannot be used; str() says why (never the password)."""


def checked(password: str) -> str:
    if not password:
        raise PasswordRefused("an empty password is refused")
    if len(password) < MIN_LENGTH:
        raise PasswordRefused(f"the password is too short: use at least {MIN_LENGTH} characters")
    return password


def ask_new_password(prompt: str = "password for the review page: ") -> str:
    """Asked twice on the terminal; PasswordRefused when there is none, or for a bad or mistyped password."""
    if not sys.stdin.isatty():
        raise PasswordRefused("no terminal to ask on: pipe the password in with --stdin")
    password = checked(getpass.getpass(prompt))
    if getpass.getpass("again, to confirm: ") != password:
        raise PasswordRefused("the two passwords differ")
    return password


def read_piped_password() -> str:
    """The first line of stdin, without its line ending (other spaces are the password's)."""
    return checked(sys.stdin.readline().rstrip("\r\n"))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of stdin (no prompt, no confirmation)")
    parser.add_argument("--hash-only", action="store_true",
                        help="print only the hash (a password_file's first line) instead of the config line")
    return parser


DESCRIPTION = (f"Hash a password for the review page (scrypt) and print the line for [web]. It is asked for twice; "
               f"empty passwords and ones under {MIN_LENGTH} characters are refused.")


def run(args: argparse.Namespace) -> int:
    try:
        password = read_piped_password() if args.stdin else ask_new_password()
    except PasswordRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return ExitCode.FAILED
    hashed = hash_password(password)
    if args.hash_only:
        print(hashed)
    else:
        print(f'password_hash = "{hashed}"')
        print("paste this line into the [web] table of your config", file=sys.stderr)
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m facewatchd.web", description=DESCRIPTION))
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
