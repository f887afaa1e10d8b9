"""Hostile images: small files whose header claims a huge picture (a decompression bomb)."""

from __future__ import annotations

import cv2
import numpy as np


def bomb_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 16x16 JPEG whose frame header (SOF0) claims width x height: a few hundred bytes that a
    decoder would allocate width x height x 3 bytes for."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 99, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)
