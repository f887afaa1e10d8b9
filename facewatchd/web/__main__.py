"""`python -m facewatchd.web`: `facewatchd web-password` under its old name."""

from facewatchd.web.password import main

if __name__ == "__main__":
    raise SystemExit(main())
