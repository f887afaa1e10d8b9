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

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels, x1 and y1 exclusive
Box = tuple[float, float, float, float]  # x, y, w, h


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
        x, y, w, h = box
        reach_x = max(w * margin, (self.config.min_side - w) / 2)
        reach_y = max(h * margin, (self.config.min_side - h) / 2)
        return (max(0, int(x - reach_x)), max(0, int(y - reach_y)),
                min(width, int(x + w + reach_x + 1)), min(height, int(y + h + reach_y + 1)))


def area(r: Rect) -> int:
    return max(0, r[2] - r[0]) * max(0, r[3] - r[1])


def merge(rects: list[Rect]) -> list[Rect]:
    """Overlapping rectangles joined into their bounding rectangle, until none overlap: a face is then inside
    one region whole, and is found once."""
    out = [r for r in rects if area(r) > 0]
    joined = True
    while joined:
        joined = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    joined = True
                    break
            if joined:
                break
    return out
