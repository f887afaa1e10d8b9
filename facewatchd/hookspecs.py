"""Every hook facewatchd calls, in one place. Built-in integrations (plugins/) use exactly these.

Implement any subset in a module or object and mark each function with `facewatchd.hookspecs.hookimpl`.
A hook may be a plain function or `async def`; it runs outside the frame loop, with a timeout, and a
hook that raises or hangs is logged with its plugin's name and never stops the pipeline. An `async def`
hook runs on the event loop (so it must not block: use asyncio.to_thread for blocking work); a plain
function runs on its plugin's own worker thread, one call after the other. Long work (a relock timer,
a retry) belongs in a task the plugin starts and ends itself, not in the hook.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:  # the types of hook arguments, all from layers below this one
    from facewatchd.events import FaceEvent, TrackEnded
    from facewatchd.pipeline.demand import TrackDemand
    from facewatchd.pipeline.health import CameraHealth
    from facewatchd.resolver.core import Resolver

hookspec = pluggy.HookspecMarker("facewatchd")
hookimpl = pluggy.HookimplMarker("facewatchd")


class PluginContext(Protocol):
    """What `facewatchd_start` and `facewatchd_stop` get; the plugin host's `facewatchd.plugins.PluginContext`
    is the one passed (its `config` is the whole typed `Config`). A protocol, so this module imports nothing
    above it and the host can import it."""

    @property
    def config(self) -> Any: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def plugin_config(self, name: str) -> Any: ...


@hookspec
def facewatchd_config_schema() -> Any:
    """Return `(section_name, PydanticModel)` for the plugin's `[plugins.<section_name>]` config section.

    The section is validated like the rest of the config (unknown keys and bad values are errors naming
    the plugin and the key); the validated model is what `PluginContext.plugin_config(name)` returns.
    """


@hookspec
def facewatchd_start(context: "PluginContext") -> Any:
    """The daemon has started: set up connections and timers. `context` gives the config, this
    plugin's validated config section and the event loop. May be async."""


@hookspec
def facewatchd_stop(context: "PluginContext") -> Any:
    """The daemon is stopping: release everything set up in `facewatchd_start`. May be async."""


@hookspec
def face_detected(event: "FaceEvent") -> Any:
    """A new face track started on a camera; nobody is named yet."""


@hookspec
def face_recognised(event: "FaceEvent") -> Any:
    """A track was named: `event.person_id` and `event.name` are set. `event.similarity` is the track's
    own latest verified similarity and `event.evidence` all its recent verified embeddings (time,
    similarity), so access control can ask for several fresh ones; `event.source` says whether the local
    cache or the resolver named it ("verified" for a repeat). Fired when the track is named and again
    at each re-verification (every `identity.reverify_frames` frames), and once for a track that had
    already ended (its `track_ended` came first) when the resolver's answer arrived: a short visit is
    still a sighting. A repeat may carry `name` None (an unlabelled person, or one forgotten meanwhile):
    treat that as not recognised."""


@hookspec
def unknown_face(event: "FaceEvent") -> Any:
    """A track was matched (by the cache or the resolver) to a person with no name: a stranger, or
    someone not labelled yet. `event.person_id` is set when the resolver gave the face an id. Like
    face_recognised, also fired once for a track that ended before the resolver's answer arrived."""


@hookspec
def person_labelled(person_id: str, name: str | None, previous: str | None) -> Any:
    """A person was named or renamed (e.g. an operator labelled `person-17` "Alice"); name None
    means the person was forgotten."""


@hookspec
def track_ended(event: "TrackEnded") -> Any:
    """A track ended (the face left); `event.dwell_s` is how long it was seen."""


@hookspec
def liveness_demand() -> "TrackDemand | None":
    """Return a `TrackDemand` (cameras, names; `LivenessDemand` is its older name) when this plugin decides on liveness: the daemon checks
    those tracks' frames (a model score and a parallax per frame, carried by `FaceEvent.liveness` and
    `FaceEvent.parallax`) and no others. Called once, after `facewatchd_start`; a demand makes the liveness
    models load at start, so a missing or damaged model file stops the daemon there. Return None for none."""


@hookspec
def evidence_demand() -> "TrackDemand | None":
    """Return a `TrackDemand` (cameras, names) for the tracks this plugin acts on by who they are (a door):
    each is embedded again every `identity.reverify_frames` frames while it is in view, so every decision
    has fresh, independent SFace embeddings in `FaceEvent.evidence`. Other tracks are embedded again only
    when their appearance changes (vision/appearance.py), their box jumps, or `identity.reverify_max_s`
    passes. Called once, after `facewatchd_start`. Return None for none."""


@hookspec
def liveness_checked(event: "FaceEvent") -> Any:
    """A demanded track's frame was checked: `event.liveness` and `event.parallax` end with this frame's
    evidence. Fired at every checked frame, so a decision waiting for liveness is taken as soon as it holds."""


@hookspec
def presentation_attack(event: "FaceEvent", detail: str) -> Any:
    """A decision found a track to be a photo or a screen, not a live person (`detail` says why, with the
    scores): the door refuses it for the rest of the track. Fired once per track. An alert."""


@hookspec
def link_status(online: bool, link: str) -> Any:
    """The link to the resolver went online or offline."""


@hookspec
def door_status(door: str, locked: bool, failures: int, detail: str) -> Any:
    """The door plugin could not confirm that the door is locked (`locked` False, `failures` attempts so
    far, `detail` the last error; fired again at each failed retry, which goes on with backoff until the
    lock answers), or confirmed it locked again after that (`locked` True). An alert, not a routine."""


@hookspec
def camera_status(camera: str, online: bool, reason: str) -> Any:
    """A live camera became unavailable (it is being reopened; `reason` says why) or delivers frames
    again. File sources that end are not offline."""


@hookspec
def camera_health(health: "CameraHealth") -> Any:
    """How a camera is doing, every `[health] interval_s` (a minute by default), the figures of the `health`
    log line over the interval just ended (`facewatchd.pipeline.health.CameraHealth`): `fps_in` (read from
    the source) and `fps_out` (taken by the pipeline) per second, `dropped` and `drop_rate` in the interval,
    `frames_total` and `dropped_total` since the start, `detect_ms` and `embed_ms` (mean per call; None when
    none ran), the resolver link (`link`, `link_online`) and the outbox's depth (`outbox`), and `dropping`
    while the camera's drops are sustained (see frame_drops). Fired once per camera per interval."""


@hookspec
def frame_drops(camera: str, dropping: bool, drop_rate: float, bound: float) -> Any:
    """A camera dropped more than `bound` (`[health] max_drop_rate`) of its frames for `[health]
    drop_intervals` intervals in a row (`dropping` True; `drop_rate` the latest interval's), or, later, an
    interval under the bound ended that (`dropping` False). The pipeline is slower than the source: faces in
    the dropped frames are never seen. An alert, not a routine."""


@hookspec
def resolver_started(resolver: "Resolver") -> Any:
    """The daemon's embedded resolver (the core over the local adapters) is up; fired once, after
    `facewatchd_start`. A plugin that acts on the collection (retention) keeps it; its changes reach
    every device's cache through the shadow, as an operator's do. Not fired with a remote resolver."""
