"""Boxes and rectangles in frame pixels: overlap, reach, merging. Shared by the detector and the stages."""

from __future__ import annotations

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels, x1 and y1 exclusive
Box = tuple[float, float, float, float]  # x, y, w, h


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def around(box: Box, margin: float, min_side: int, width: int, height: int) -> Rect:
    """The rectangle reaching `margin` of the box's size beyond it on each side (at least min_side across),
    inside a width x height frame."""
    x, y, w, h = box
    reach_x = max(w * margin, (min_side - w) / 2)
    reach_y = max(h * margin, (min_side - h) / 2)
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
