"""Still-image face analysis: find the faces in a photo or crop and embed them.

Used where there is no video track: enrolling from photos, the local resolver when a request carries
no embedding, and test servers. Thread-safe (one lock), so it can be called from a thread pool.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewatchd.vision.detector import DetectorConfig, Face, YuNetDetector
from facewatchd.vision.embedder import EmbedderConfig, SFaceEmbedder
from facewatchd.vision.quality import FaceQuality, measure

MAX_IMAGE_PIXELS = 40_000_000  # a photo or frame: 8K video is 33 MP
MAX_CROP_PIXELS = 4_000_000  # a face crop from a device (they are at most 1024 px a side)
CROP_SCORE_THRESHOLD = 0.3  # the detector's threshold inside such a crop (FaceAnalyzer.embed_crop)


class ImageError(ValueError):
    """Bytes that are not a decodable image."""


@dataclass(frozen=True, slots=True)
class AnalysedFace:
    face: Face
    embedding: np.ndarray
    quality: FaceQuality  # what the quality gate decides on (vision/quality.py)


def image_size(source: bytes | Path) -> tuple[int, int]:
    """(width, height) from the image's header alone: no pixel is decoded; raises ImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size
    except Image.DecompressionBombError as e:  # Pillow's own limit, far above ours: the header says enough
        raise ImageError(f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"not a readable image: {e}") from None


def check_image_size(source: bytes | Path, max_pixels: int) -> None:
    """Refuse an image whose header claims more than `max_pixels` before anything allocates its pixels (a
    600-byte JPEG can claim 30000x30000, 2.7 GB once decoded)."""
    width, height = image_size(source)
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} image: more than {max_pixels} pixels, refused before decoding")


def decode_image(data: bytes, max_pixels: int = MAX_CROP_PIXELS) -> np.ndarray:
    """A JPEG (or other image) from bytes, within a pixel limit (by default a face crop's)."""
    if not data:
        raise ImageError("not a decodable image: empty")
    check_image_size(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("not a decodable image")
    return image


def read_image(path: Path | str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file, within a pixel limit; raises ImageError (never returns None)."""
    check_image_size(Path(path), max_pixels)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("not a decodable image")
    return image


class FaceAnalyzer:
    def __init__(self, detector: DetectorConfig | None = None, embedder: EmbedderConfig | None = None,
                 embedder_instance: SFaceEmbedder | None = None) -> None:
        # Crops are small and tight: a lower score threshold and min size than the video detector.
        cfg = (detector or DetectorConfig()).model_copy(update={"min_face_px": 12})
        self._detector = YuNetDetector(cfg, sized=False)  # crops and photos come in every size
        # A device's crop was cut round a face its detector found in the whole frame; cut out, a small or dark
        # face scores lower (the sample clip's audience: four of sixteen crops under 0.7, none under 0.3)
        self._crop_detector = YuNetDetector(cfg.model_copy(update={"score_threshold": CROP_SCORE_THRESHOLD}),
                                            sized=False)
        self._embedder = embedder_instance or SFaceEmbedder(embedder)
        self._lock = threading.Lock()

    def faces(self, image: np.ndarray) -> list[AnalysedFace]:
        """All faces, largest first."""
        with self._lock:
            found = sorted(self._detector.detect(image), key=lambda f: f.box[2] * f.box[3], reverse=True)
            analysed = []
            for f in found:
                aligned = self._embedder.align(image, f)
                embeddings, norms = self._embedder.embed_batch_with_norms([aligned])
                analysed.append(AnalysedFace(f, embeddings[0], measure(f, aligned, float(norms[0]))))
            return analysed

    def largest(self, image: np.ndarray) -> AnalysedFace | None:
        found = self.faces(image)
        return found[0] if found else None

    def embed_crop(self, jpeg: bytes) -> np.ndarray | None:
        """The embedding of the largest face in a device's crop, found and embedded here (a resolver never
        takes a device's own numbers); None when it holds no face or is not a readable image."""
        try:
            image = decode_image(jpeg)
        except ImageError:
            return None
        with self._lock:
            found = self._crop_detector.detect(image)
            if not found:
                return None
            return self._embedder.embed(image, max(found, key=lambda f: f.box[2] * f.box[3]))
