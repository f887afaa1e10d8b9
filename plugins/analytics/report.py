"""`facewatchd stats`: the analytics database as a table, and as a chart (visits per hour, dwell)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

from plugins.analytics.store import DWELL_BINS_S, Aggregate, AnalyticsStore

SPAN = re.compile(r"^(\d+)([mhd])$")
SPAN_S = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """`24h`, `7d`, `90m` (back from now), or an ISO date or date-time (local time unless it has an offset)."""
    if match := SPAN.match(text.strip()):
        return max(0.0, (now if now is not None else time.time()) - int(match[1]) * SPAN_S[match[2]])
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{text!r}: expected an ISO date or date-time (2026-11-28, 2026-11-28T09:00) "
                         "or a span back from now (90m, 24h, 7d)") from None


def hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour).astimezone().strftime("%Y-%m-%d %H:%M")


def bin_label(index: int) -> str:
    def short(s: int) -> str:
        return f"{s // 60}m" if s >= 60 and s % 60 == 0 else f"{s}s"

    low = DWELL_BINS_S[index]
    return f"{short(low)}+" if index == len(DWELL_BINS_S) - 1 else f"{short(low)}-{short(DWELL_BINS_S[index + 1])}"


def _row(when: str, a: Aggregate) -> str:
    def n(v: int | None) -> str:
        return "-" if v is None else str(v)

    return (f"{when:<16}  {a.camera:<12} {a.visits:>6} {a.identified:>10} {n(a.unique):>6} {n(a.new):>4} "
            f"{n(a.returning):>9} {a.mean_dwell_s:>10.1f}")


def table(store: AnalyticsStore, since: float | None, camera: str | None) -> str:
    rows = store.hours(since, camera)
    offset = datetime.now().astimezone().strftime("%z")
    lines = [f"{store.path}: hours in local time (UTC{offset[:3]}:{offset[3:]}); a visit counts in the hour it began"]
    if not rows:
        return "\n".join(lines + ["no visits" + (f" on camera {camera!r}" if camera else "") +
                                  (f" since {datetime.fromtimestamp(since).astimezone():%Y-%m-%d %H:%M}"
                                   if since is not None else "")])
    lines.append(f"{'hour':<16}  {'camera':<12} {'visits':>6} {'identified':>10} {'unique':>6} {'new':>4} "
                 f"{'returning':>9} {'mean dwell':>10}")
    lines += [_row(hour_label(a.hour or 0), a) for a in rows]
    lines.append(_row("total", store.total(since, camera)))
    histogram = store.dwell_histogram(since, camera)
    lines.append("dwell: " + "  ".join(f"{bin_label(i)} {histogram[edge]}" for i, edge in enumerate(DWELL_BINS_S)))
    if store.anonymous:
        lines.append("mean dwell in seconds; unique, new, returning: not counted (anonymous = true: no person ids "
                     "are kept)")
    else:
        lines.append("mean dwell in seconds; unique: persons (from person ids); new: first seen ever here; "
                     "identified: visits whose person was known when they ended")
    return "\n".join(lines)


def plot(store: AnalyticsStore, since: float | None, camera: str | None, path: Path) -> None:
    """Visits per hour (stacked by camera) and the dwell distribution, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a device: render to a file
    import matplotlib.pyplot as plt

    rows = store.hours(since, camera)
    hours = sorted({a.hour or 0 for a in rows})
    cameras = sorted({a.camera for a in rows})
    figure, (visits_ax, dwell_ax) = plt.subplots(2, 1, figsize=(10, 7), layout="constrained")
    bottom = [0] * len(hours)
    for cam in cameras:
        counts = {a.hour: a.visits for a in rows if a.camera == cam}
        values = [counts.get(h, 0) for h in hours]
        visits_ax.bar([hour_label(h) for h in hours], values, bottom=bottom, label=cam)
        bottom = [b + v for b, v in zip(bottom, values)]
    visits_ax.set_title("Visits per hour")
    visits_ax.set_ylabel("visits")
    visits_ax.tick_params(axis="x", labelrotation=45)
    if cameras:
        visits_ax.legend(title="camera")
    histogram = store.dwell_histogram(since, camera)
    dwell_ax.bar([bin_label(i) for i in range(len(DWELL_BINS_S))], list(histogram.values()))
    dwell_ax.set_title("Dwell time")
    dwell_ax.set_xlabel("time in view")
    dwell_ax.set_ylabel("visits")
    figure.savefig(path, format="png")
    plt.close(figure)
