"""The review page: people look at faces and name them, merge, move or reject faces, forget persons, see
who is in view now and what the door decided. Served by the daemon (embedded resolver) and by the
on-prem resolver service, on the same event loop, through aiohttp.web and Jinja2 templates.

Every change goes through the running resolver (as the control socket's do), so a running daemon names
the person in its next frames; every change is logged with who made it (`<state_dir>/changes.jsonl`).
Authentication: see `auth.py`. Lists are paginated in SQL, so 10,000 persons stay fast. The pages are in
`pages.py`, the changes (confirmed, undoable for a while, errors next to their forms) in `actions.py`.
"""

from facewatchd.web.config import WebConfig
from facewatchd.web.door_audit import door_attack_crop, door_audit_path
from facewatchd.web.live import Live, Sighting
from facewatchd.web.server import WebServer

__all__ = ["Live", "Sighting", "WebConfig", "WebServer", "door_attack_crop", "door_audit_path"]
