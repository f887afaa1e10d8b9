"""`facewatchd web-password`: help, two prompts on a real terminal (a pty), refusals, `--stdin` for scripts,
and a line that pastes into the config; `python -m facewatchd.web` is the same command."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from facewatchd.app.config import parse_config
from facewatchd.web.auth import check_password
from tests.support.daemon import ROOT


class Terminal:
    """The command on a pseudo-terminal of its own, as a person at a shell runs it (getpass reads /dev/tty)."""

    def __init__(self, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its controlling terminal is the pty
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "facewatchd", *args],
                      dict(os.environ, PYTHONPATH=str(ROOT)))
        self.seen = ""

    def until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out waiting for {text!r}; seen {self.seen!r}"
            if select.select([self.fd], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the command ended before {text!r}; seen {self.seen!r}"
                self.seen += chunk.decode(errors="replace")
        return self.seen

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def exit_code(self) -> int:
        while True:  # read what is left, so the child never blocks on a full terminal
            try:
                if not os.read(self.fd, 4096):
                    break
            except OSError:
                break
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_help_prints_help_and_asks_nothing() -> None:
    for args in (["facewatchd", "web-password", "--help"], ["facewatchd.web", "--help"]):
        proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), stdin=subprocess.DEVNULL)
        text = " ".join(proc.stdout.split())
        assert proc.returncode == 0 and "--stdin" in text and "under 8 characters are refused" in text, proc.stderr


def test_it_asks_twice_and_prints_a_line_for_the_config() -> None:
    term = Terminal("web-password")
    term.until("password for the review page: ")
    term.type("correct horse battery")
    term.until("again, to confirm: ")
    term.type("correct horse battery")
    out = term.until("[web] table")
    assert term.exit_code() == 0
    line = next(x for x in out.splitlines() if x.startswith("password_hash = "))
    assert "correct horse" not in out  # no echo
    pasted = parse_config({"web": tomllib.loads(line)})  # what a user pastes is a valid [web] password_hash
    assert pasted.web.enabled and check_password("correct horse battery", pasted.web.stored_hash())


def test_a_mistyped_confirmation_an_empty_or_a_short_password_is_refused() -> None:
    term = Terminal("web-password")
    term.until("password for the review page: ")
    term.type("correct horse battery")
    term.until("again, to confirm: ")
    term.type("correct horse batery")
    assert "error: the two passwords differ" in term.until("differ")
    assert term.exit_code() == 1 and "password_hash" not in term.seen
    for typed, refusal in (("", "an empty password is refused"), ("hunter2", "use at least 8 characters")):
        term = Terminal("web-password")
        term.until("password for the review page: ")
        term.type(typed)
        term.until(refusal)
        assert term.exit_code() == 1 and "again" not in term.seen and "password_hash" not in term.seen


def test_stdin_serves_scripts_and_no_terminal_is_a_clear_error(tmp_path: Path) -> None:
    def piped(*args: str, stdin: str | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60,
                              stdin=subprocess.DEVNULL if stdin is None else None, start_new_session=True)

    ok = piped("facewatchd", "web-password", "--stdin", "--hash-only", stdin="correct horse battery\n")
    assert ok.returncode == 0 and check_password("correct horse battery", ok.stdout.strip()), ok.stderr
    old_name = piped("facewatchd.web", "--stdin", stdin="  spaces count too  \r\n")
    assert old_name.returncode == 0 and old_name.stdout.startswith('password_hash = "scrypt$'), old_name.stderr
    assert check_password("  spaces count too  ", old_name.stdout.split('"')[1])
    for stdin, refusal in (("\n", "an empty password is refused"), ("", "an empty password is refused"),
                           ("short\n", "use at least 8 characters")):
        bad = piped("facewatchd", "web-password", "--stdin", stdin=stdin)
        assert bad.returncode == 1 and refusal in bad.stderr and bad.stdout == ""
    # no terminal (a service, a pipe) and no --stdin: said so, no EOFError
    for module in ("facewatchd", "facewatchd.web"):
        args = (module, "web-password") if module == "facewatchd" else (module,)
        none = piped(*args, stdin=None)
        assert none.returncode == 1 and "no terminal to ask on: pipe the password in with --stdin" in none.stderr
        assert "Traceback" not in none.stderr
