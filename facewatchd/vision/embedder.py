"""SFace embeddings through OpenCV's DNN module: align the face to 112x112, then a 128-d feature.

Embeddings are returned L2-normalised, so cosine similarity is a dot product (the face cache relies
on that to match a face against thousands of entries with one matrix product). The network is run
directly (cv2.dnn) rather than through cv2.FaceRecognizerSF, the same model and preprocessing: it
takes a batch of faces (and their mirror images) in one forward pass, and holds one copy of the
weights instead of two (about 30 MB less resident memory).
"""

from __future__ import annotations

import queue
import threading
from typing import Protocol

import cv2
import numpy as np

from facewatchd.vision.alignment import ALIGNED_SIZE, align_face
from facewatchd.vision.detector import Face
from facewatchd.vision.embedding import EMBEDDING_DIM, EmbedderConfig, mirrored, normalise, unit_features
from facewatchd.vision.models import SFACE, ModelError, verified_path

SFACE_COSINE_THRESHOLD = 0.363  # SFace's published same-person threshold
# Images per forward pass. OpenCV's engine keeps buffers for the largest batch it has run: 6 images cost
# nothing over one, 8 about 30 MB more, 58 (the Solvay photo's 29 faces and their mirrors) 330 MB more.
# Larger batches save only about 2 % of the CPU per face.
MAX_BATCH = 2


class Embedder(Protocol):
    """What the pipeline needs from an embedder; both backends provide it."""

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray: ...

    def embed_aligned(self, aligned: np.ndarray, mirror: bool | None = None) -> np.ndarray: ...

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray: ...

    def embed_batch(self, aligned: list[np.ndarray], mirror: bool | None = None) -> np.ndarray: ...

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) \
            -> tuple[np.ndarray, np.ndarray]: ...


class SFaceEmbedder:
    """Thread-safe: an OpenCV network keeps per-run buffers and cannot run two passes at once, so each
    concurrent call takes a network of its own from a free list (one more is loaded only when every
    loaded one is busy: as many as calls ever ran at once, each about 80 MB of memory). With `networks`,
    no more than that are loaded, and a call that finds them all busy waits for one."""

    def __init__(self, config: EmbedderConfig | None = None, networks: int | None = None) -> None:
        self.config = config or EmbedderConfig()
        self._path = str(verified_path(SFACE, self.config.model_path))
        self._free: queue.SimpleQueue[cv2.dnn.Net] = queue.SimpleQueue()
        self._free.put(self._load())  # the first at once: a model that does not load fails here, not on a face
        self._limit, self._loaded = networks, 1
        self._loading = threading.Lock()

    def _load(self) -> cv2.dnn.Net:
        return cv2.dnn.readNetFromONNX(self._path)

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 aligned face crop SFace was trained on."""
        return align_face(frame, face)

    def embed_aligned(self, aligned: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        return self.embed_batch([aligned], mirror)[0]

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(self.align(frame, face))

    def embed_batch(self, aligned: list[np.ndarray], mirror: bool | None = None) -> np.ndarray:
        """(N, 128) embeddings of N aligned faces; with `flip` (unless `mirror` is False), each the
        normalised mean of the face's and its mirror image's."""
        return self.embed_batch_with_norms(aligned, mirror)[0]

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """embed_batch, and each face's feature norm before normalisation (the mean over the face and its
        mirror image): SFace's own quality signal, small for faces it cannot read (vision/quality.py)."""
        if not aligned:
            return np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.float32)
        for a in aligned:
            if a.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
                raise ValueError(f"expected a 112x112 BGR aligned face, got shape {a.shape}")
        flip = self.config.flip and mirror is not False
        images = list(aligned) + ([mirrored(a) for a in aligned] if flip else [])
        features = np.concatenate([self._forward(images[i:i + MAX_BATCH]) for i in range(0, len(images), MAX_BATCH)])
        return unit_features(features, len(aligned), flip)

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        try:
            net = self._free.get_nowait()
        except queue.Empty:  # every loaded network is running a pass on another thread
            net = self._another()
        try:
            # what FaceRecognizerSF.feature feeds the network: RGB, unscaled, no mean
            net.setInput(cv2.dnn.blobFromImages(images, 1.0, (ALIGNED_SIZE, ALIGNED_SIZE), (0, 0, 0), True, False))
            return net.forward().reshape(len(images), -1).astype(np.float32)
        finally:
            self._free.put(net)


    def _another(self) -> cv2.dnn.Net:
        with self._loading:
            may_load = self._limit is None or self._loaded < self._limit
            self._loaded += may_load
        return self._load() if may_load else self._free.get()  # at the limit: wait for one to be free


def create_embedder(config: EmbedderConfig | None = None, networks: int | None = None) -> Embedder:
    """The backend named by `[embedder] type`: OpenCV (default, at most `networks` copies of the network) or
    PyTorch (the `torch` extra)."""
    config = config or EmbedderConfig()
    if config.type != "torch":
        return SFaceEmbedder(config, networks)
    try:
        from facewatchd.vision.embedder_torch import TorchSFaceEmbedder
    except ImportError as e:
        if e.name not in {"torch", "onnx"}:
            raise
        raise ModelError(f'embedder type "torch" needs {e.name}: install facewatchd with the torch extra '
                         '(pip install -e ".[torch]")') from e
    return TorchSFaceEmbedder(config)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(normalise(a), normalise(b)))
