"""A second cue that no model learnt: a held picture has edges all round the face.

A print has the card's edge, a phone or tablet its bezel: four long straight edges that close a
rectangle (seen in perspective) around the face, within a few face widths of it (wider for a wide screen), below the chin too. A
live person may stand in a door frame (left, right and top edges) or before a counter, but nothing
closes under a live face except the picture's own edge. `framed` finds such a closed frame in one view:
a long straight edge on each of the four sides, each passing the face.

What it catches: a print or a screen held at arm's length or further, still or moving, photos and video
replays alike. What it misses: a picture held so close that its edges are out of the view, a picture
whose edge a hand or a sleeve hides on one side, and a cut-out face (no edge at all).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

REACH_X, REACH_Y = 7.0, 3.5  # how far from the face centre an edge may lie, in face widths and heights
# (a tablet playing a wide video is several face widths wide)
MIN_EDGE = 1.0  # shortest edge counted, in face widths (heights for the sides)
MAX_TILT_DEG = 35.0  # a held picture is turned and tilted: its edges are no longer axis-aligned
ANALYSED_FACE_PX = 32.0  # the region is scaled so the face is about this wide: thresholds do not depend on size


def framed(image: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """True when long straight edges close a frame around the face in `box` on all four sides."""
    x, y, w, h = box
    if w < 8 or h < 8:
        return False
    height, width = image.shape[:2]
    x0, y0 = int(max(0, x + w / 2 - REACH_X * w)), int(max(0, y + h / 2 - REACH_Y * h))
    x1, y1 = int(min(width, x + w / 2 + REACH_X * w)), int(min(height, y + h / 2 + REACH_Y * h))
    region = image[y0:y1, x0:x1]
    if region.size == 0:
        return False
    scale = ANALYSED_FACE_PX / w
    grey = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fw, fh = ANALYSED_FACE_PX, h * scale
    found = cv2.createLineSegmentDetector(cv2.LSD_REFINE_NONE).detect(grey)[0]
    if found is None:
        return False
    segments = [s for s in found.reshape(-1, 4).astype(float) if math.hypot(s[2] - s[0], s[3] - s[1]) >= MIN_EDGE * fw]
    # the face in the analysed region's coordinates
    left, top = (x - x0) * scale, (y - y0) * scale
    right, bottom, cx, cy = left + fw, top + fh, left + fw / 2, top + fh / 2
    sides = set()
    for sx, sy, ex, ey in segments:
        angle = math.degrees(math.atan2(ey - sy, ex - sx)) % 180
        if abs(angle - 90) <= MAX_TILT_DEG:  # upright: a left or right edge, passing the face's eye line
            if min(sy, ey) <= cy <= max(sy, ey):
                at = sx + (ex - sx) * (cy - sy) / (ey - sy)
                if at < left - 0.1 * fw:
                    sides.add("left")
                elif at > right + 0.1 * fw:
                    sides.add("right")
        elif min(angle, 180 - angle) <= MAX_TILT_DEG:  # level: a top or bottom edge, passing over the face
            if min(sx, ex) <= cx <= max(sx, ex):
                at = sy + (ey - sy) * (cx - sx) / (ex - sx)
                if at < top - 0.1 * fh:
                    sides.add("top")
                elif at > bottom + 0.1 * fh:
                    sides.add("bottom")
    return len(sides) == 4
