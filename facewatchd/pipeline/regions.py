"""Where to look for faces in a frame: the full frame now and then, and between those only where faces can
be: around the live tracks and where something moved.

As Frigate runs its detector on motion areas and tracked objects' boxes: YuNet's cost grows with the pixels
it is given, and most of a door or shop camera's frame is a wall, a floor, a shelf. A face cannot appear
where nothing moved, and a face already tracked is near its last box. Regions are cut at native resolution
(vision/detector.py `detect_in`), so a small face that the full frame's downscale to `detector.max_side`
loses (a 1080p camera's faces of 20-40 px) is found in a region.

The full frame is still detected every `full_frame_every` frames, at a scene cut, where the motion gate
cannot say where things moved (its first frame, a change of light over the whole image), and where the
regions would cost as much as the full frame anyway. Logic only: the detection is the detector's.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


from facewatchd.vision.rects import Box, Rect, area, around, merge

__all__ = ["Box", "Rect", "RegionConfig", "RegionPlanner", "merge"]


class RegionConfig(BaseModel):
    """`[regions]`: detect faces only around live tracks and motion between full-frame detections."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    full_frame_every: int = Field(10, ge=1, le=1000, description="frames between full-frame detections")
    track_margin: float = Field(1.0, ge=0.25, le=5, description="a track's region reaches this share of the "
                                "face's size beyond its box on each side (how far a face may move in a frame)")
    motion_margin: float = Field(0.5, ge=0, le=5, description="a motion area's region reaches this share of "
                                 "its size beyond it on each side")
    min_side: int = Field(96, ge=32, le=4096, description="smallest region side, in full-frame pixels")
    max_share: float = Field(0.5, gt=0, le=1, description="regions covering more of the frame than this: the "
                             "full frame is detected instead")


class RegionPlanner:
    """One per camera, used from its detection stage only."""

    def __init__(self, config: RegionConfig | None = None) -> None:
        self.config = config or RegionConfig()
        self._since_full: int | None = None  # frames since the last full-frame detection; None: none yet
        self.region_frames = 0  # frames detected in regions only

    def plan(self, width: int, height: int, tracks: list[Box], moved: list[Box] | None,
             cut: bool = False) -> list[Rect] | None:
        """The regions to detect in this frame, or None for the full frame. `moved`: the motion gate's areas
        as shares of the frame (x, y, w, h in 0-1), None when it cannot tell (everything may have moved)."""
        c = self.config
        since = self._since_full
        if not c.enabled or moved is None or cut or since is None or since + 1 >= c.full_frame_every:
            return self._full()
        regions = [self._around(box, c.track_margin, width, height) for box in tracks]
        regions += [self._around((x * width, y * height, w * width, h * height), c.motion_margin, width, height)
                    for x, y, w, h in moved]
        regions = merge(regions)
        if not regions or sum(area(r) for r in regions) > c.max_share * width * height:
            return self._full()
        self._since_full = since + 1
        self.region_frames += 1
        return regions

    def _full(self) -> None:
        self._since_full = 0
        return None

    def _around(self, box: Box, margin: float, width: int, height: int) -> Rect:
        return around(box, margin, self.config.min_side, width, height)
