"""Prometheus metrics: counters of what the hooks saw, served as text on a small HTTP endpoint, and
`/healthz` (200 "ok", or 503 with what is broken in the daemon).

No client library: a handful of counters and the text exposition format need a few lines, and the
server is asyncio's own (`GET /metrics`; anything else is 404).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.events import FaceEvent, TrackEnded
from facewatchd.hookspecs import hookimpl
from facewatchd.pipeline.health import CameraHealth
from facewatchd.plugins import PluginContext, PluginHost

log = structlog.get_logger("facewatchd.plugins.metrics")

MAX_REQUEST_BYTES = 8192


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 for every interface")
    port: int = Field(9108, ge=0, le=65535, description="0: any free port (logged)")


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class Plugin:
    """Hooks only count (async: on the loop, no thread, nothing to lock); a scrape reads the counters."""

    def __init__(self) -> None:
        self.config = MetricsConfig()
        self.host: PluginHost | None = None
        self.faces: Counter[str] = Counter()  # camera → face tracks started
        self.tracks: Counter[str] = Counter()  # camera → tracks ended
        self.dwell_s: Counter[str] = Counter()  # camera → seconds seen, summed over ended tracks
        self.recognitions: Counter[tuple[str, str]] = Counter()  # (camera, source) → tracks named
        self.unknown: Counter[str] = Counter()  # camera → tracks matched to an unnamed person
        self.labels = 0
        self.link_online: dict[str, bool] = {}
        self.camera_online: dict[str, bool] = {}
        self.door_locked: dict[str, bool] = {}
        self.door_lock_failures: Counter[str] = Counter()
        self.health: dict[str, CameraHealth] = {}  # camera → its latest health figures
        self.stage_ms: dict[tuple[str, str], float] = {}  # (camera, stage) → its latest measured mean
        self._named: set[tuple[str, str]] = set()
        self._unknown_tracks: set[tuple[str, str]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @hookimpl
    def facewatchd_config_schema(self) -> tuple[str, type[MetricsConfig]]:
        return "metrics", MetricsConfig

    @hookimpl
    async def facewatchd_start(self, context: PluginContext) -> None:
        self.config = context.plugin_config("metrics")
        self.host = context.host
        self.camera_online = {c.id: True for c in context.config.cameras}
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics_listening", url=f"http://{self.config.host}:{self.port}/metrics")

    @hookimpl
    async def facewatchd_stop(self, context: PluginContext) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @hookimpl
    async def face_detected(self, event: FaceEvent) -> None:
        self.faces[event.camera] += 1

    @hookimpl
    async def face_recognised(self, event: FaceEvent) -> None:
        key = (event.camera, event.track_id)
        if event.name and key not in self._named:  # once per track, not per "more frames agree"
            self._named.add(key)
            self.recognitions[(event.camera, event.source or "unknown")] += 1

    @hookimpl
    async def unknown_face(self, event: FaceEvent) -> None:
        key = (event.camera, event.track_id)
        if key not in self._unknown_tracks:  # once per track, as recognitions: not at each re-verification
            self._unknown_tracks.add(key)
            self.unknown[event.camera] += 1

    @hookimpl
    async def track_ended(self, event: TrackEnded) -> None:
        self.tracks[event.face.camera] += 1
        self.dwell_s[event.face.camera] += event.dwell_s
        self._named.discard((event.face.camera, event.face.track_id))
        self._unknown_tracks.discard((event.face.camera, event.face.track_id))

    @hookimpl
    async def person_labelled(self, person_id: str, name: str | None, previous: str | None) -> None:
        self.labels += 1

    @hookimpl
    async def link_status(self, online: bool, link: str) -> None:
        self.link_online[link] = online

    @hookimpl
    async def camera_status(self, camera: str, online: bool, reason: str) -> None:
        self.camera_online[camera] = online

    @hookimpl
    async def door_status(self, door: str, locked: bool, failures: int, detail: str) -> None:
        self.door_locked[door] = locked
        if not locked:
            self.door_lock_failures[door] += 1

    @hookimpl
    async def camera_health(self, health: CameraHealth) -> None:
        self.health[health.camera] = health
        for stage, ms in (("detect", health.detect_ms), ("embed", health.embed_ms)):
            if ms is not None:  # an interval with no detection keeps the last measure: a gauge that stays
                self.stage_ms[(health.camera, stage)] = ms

    def exposition(self) -> str:
        failures = self.host.failures if self.host else {}
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(**labels)} {value:g}")

        family("facewatchd_faces_total", "counter", "Face tracks started (face_detected).",
               [({"camera": c}, n) for c, n in sorted(self.faces.items())])
        family("facewatchd_tracks_ended_total", "counter", "Face tracks ended.",
               [({"camera": c}, n) for c, n in sorted(self.tracks.items())])
        family("facewatchd_track_dwell_seconds_total", "counter", "Seconds faces were seen, over ended tracks.",
               [({"camera": c}, round(n, 3)) for c, n in sorted(self.dwell_s.items())])
        family("facewatchd_recognitions_total", "counter", "Tracks named, by what named them (cache or resolver).",
               [({"camera": c, "source": s}, n) for (c, s), n in sorted(self.recognitions.items())])
        family("facewatchd_unknown_faces_total", "counter", "Tracks matched to a person without a name.",
               [({"camera": c}, n) for c, n in sorted(self.unknown.items())])
        family("facewatchd_person_labels_total", "counter", "Persons named, renamed or forgotten.", [({}, self.labels)])
        family("facewatchd_plugin_hook_failures_total", "counter", "Plugin hooks that raised or timed out.",
               [({"plugin": p}, n) for p, n in sorted(failures.items())])
        family("facewatchd_link_online", "gauge", "1 while the link to the resolver is up.",
               [({"link": k}, float(v)) for k, v in sorted(self.link_online.items())])
        family("facewatchd_camera_online", "gauge", "0 while a live camera is being reopened.",
               [({"camera": k}, float(v)) for k, v in sorted(self.camera_online.items())])
        family("facewatchd_door_locked", "gauge", "0 while the door plugin cannot confirm the door is locked.",
               [({"door": k}, float(v)) for k, v in sorted(self.door_locked.items())])
        family("facewatchd_door_lock_failures_total", "counter", "Attempts to lock the door that failed.",
               [({"door": k}, n) for k, n in sorted(self.door_lock_failures.items())])
        self._health_families(family)
        return "\n".join(out) + "\n"

    def _health_families(self, family: Any) -> None:
        """The health line's figures (the latest interval's), per camera."""
        cameras = sorted(self.health.items())

        def per_camera(name: str, kind: str, help_text: str, value: Any) -> None:
            family(name, kind, help_text, [({"camera": c}, float(v)) for c, h in cameras if (v := value(h)) is not None])

        per_camera("facewatchd_camera_fps_in", "gauge", "Frames read from the source per second, over the last "
                   "health interval.", lambda h: h.fps_in)
        per_camera("facewatchd_camera_fps_out", "gauge", "Frames the pipeline took per second, over the last "
                   "health interval.", lambda h: h.fps_out)
        per_camera("facewatchd_camera_frames_total", "counter", "Frames read from the source.", lambda h: h.frames_total)
        per_camera("facewatchd_camera_frames_dropped_total", "counter", "Frames dropped: a newer one came before "
                   "the pipeline took them.", lambda h: h.dropped_total)
        per_camera("facewatchd_camera_drop_ratio", "gauge", "Share of frames dropped over the last health interval.",
                   lambda h: h.drop_rate)
        per_camera("facewatchd_camera_dropping", "gauge", "1 while the drops are above [health] max_drop_rate, "
                   "sustained.", lambda h: h.dropping)
        for stage, what in (("detect", "face detection"), ("embed", "embedding call (a batch of faces)")):
            family(f"facewatchd_{stage}_seconds", "gauge", f"Mean time of one {what}, over the latest health "
                   "interval that had one.", [({"camera": c}, ms / 1000) for (c, s), ms in sorted(self.stage_ms.items())
                                              if s == stage])
        latest = max((h for _, h in cameras), key=lambda h: h.frames_total, default=None)
        family("facewatchd_outbox_requests", "gauge", "Requests in the outbox, waiting for the resolver's answer.",
               [({}, float(latest.outbox))] if latest else [])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].split(b"?")[0] if len(parts) >= 2 and parts[0] in (b"GET", b"HEAD") else b""
            if path == b"/metrics":
                body = self.exposition().encode()
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            elif path == b"/healthz":  # 503 while the daemon runs half-alive (a background task died)
                problem = self.host.health() if self.host else None
                body = f"{problem or 'ok'}\n".encode()
                status, ctype = ("503 Service Unavailable" if problem else "200 OK"), "text/plain"
            else:
                body, status, ctype = b"not found: try /metrics or /healthz\n", "404 Not Found", "text/plain"
            headers = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n" \
                      "Connection: close\r\n\r\n"
            writer.write(headers.encode() + (body if parts[:1] != [b"HEAD"] else b""))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that went away or sent garbage: nothing to answer
        finally:
            writer.close()
