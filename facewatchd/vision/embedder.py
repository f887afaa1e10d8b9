"""SFace embeddings through OpenCV's DNN module: align the face to 112x112, then a 128-d feature.

Embeddings are returned L2-normalised, so cosine similarity is a dot product (the face cache relies
on that to match a face against thousands of entries with one matrix product). The network is run
directly (cv2.dnn) rather than through cv2.FaceRecognizerSF, the same model and preprocessing: it
takes a batch of faces (and their mirror images) in one forward pass, and holds one copy of the
weights instead of two (about 30 MB less resident memory).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facewatchd.vision.alignment import ALIGNED_SIZE, align_face
from facewatchd.vision.detector import Face
from facewatchd.vision.models import SFACE, ModelError, verified_path

EMBEDDING_DIM = 128
SFACE_COSINE_THRESHOLD = 0.363  # SFace's published same-person threshold
# Images per forward pass. OpenCV's engine keeps buffers for the largest batch it has run: 6 images cost
# nothing over one, 8 about 30 MB more, 58 (the Solvay photo's 29 faces and their mirrors) 330 MB more.
# Larger batches save only about 2 % of the CPU per face.
MAX_BATCH = 2


class EmbedderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field("opencv", pattern="^(opencv|torch)$")
    model_path: Path | None = None
    flip: bool = Field(True, description="embed the face and its mirror image and average them (test-time "
                       "augmentation): twice the embedding work, fewer misses at a strict threshold "
                       "(bench/openset.py: 1,000 enrolled, FNIR 7.6 % → 5.8 % at FPIR about 1 %)")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="torch only: where the model runs; auto "
                                                   "takes CUDA when torch sees a GPU")
    int8: bool = Field(False, description="torch only: int8 dynamic quantization of the fully connected layer, "
                       "two thirds of the weights (CPU only; weights 39 → 19 MB)")
    batch_size: int = Field(16, ge=1, le=1024, description="torch only: faces per forward pass in embed_batch")
    threads: int = Field(1, ge=0, le=256, description="torch only: CPU threads per forward pass (process-wide, "
                         "as the daemon sets OpenCV's to 1: parallelism comes from its thread pool); 0 keeps "
                         "torch's default")

    @model_validator(mode="after")
    def _torch_options_need_torch(self) -> "EmbedderConfig":
        torch_only = {"device", "int8", "batch_size", "threads"} & self.model_fields_set
        if self.type != "torch" and torch_only:
            raise ValueError(f"{', '.join(sorted(torch_only))}: only for type = \"torch\"")
        if self.int8 and self.device == "cuda":
            raise ValueError("int8 runs on the CPU only: use device = \"cpu\" or \"auto\"")
        return self


class Embedder(Protocol):
    """What the pipeline needs from an embedder; both backends provide it."""

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray: ...

    def embed_aligned(self, aligned: np.ndarray, mirror: bool | None = None) -> np.ndarray: ...

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray: ...

    def embed_batch(self, aligned: list[np.ndarray], mirror: bool | None = None) -> np.ndarray: ...

    def embed_batch_with_norms(self, aligned: list[np.ndarray], mirror: bool | None = None) \
            -> tuple[np.ndarray, np.ndarray]: ...


def unit_features(features: np.ndarray, faces: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw features of `faces` faces (then, with `flip`, of their mirror images) → unit embeddings (the
    normalised mean of a face's and its mirror's) and each face's mean feature norm."""
    norms = np.linalg.norm(features, axis=1)
    features = features / np.maximum(norms[:, None], 1e-12)
    if flip:
        features = features[:faces] + features[faces:]
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        norms = (norms[:faces] + norms[faces:]) / 2
    return features.astype(np.float32), norms.astype(np.float32)


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def mirrored(aligned: np.ndarray) -> np.ndarray:
    """The aligned face flipped left to right (SFace's template is symmetric, so it stays aligned)."""
    return np.ascontiguousarray(aligned[:, ::-1])


class SFaceEmbedder:
    """Thread-safe: an OpenCV network keeps per-run buffers and cannot run two passes at once, so each
    concurrent call takes a network of its own from a free list (one more is loaded only when every
    loaded one is busy: as many as calls ever ran at once, each about 40 MB)."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()
        self._path = str(verified_path(SFACE, self.config.model_path))
        self._free: queue.SimpleQueue[cv2.dnn.Net] = queue.SimpleQueue()
        self._free.put(self._load())  # the first at once: a model that does not load fails here, not on a face

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
            net = self._load()
        try:
            # what FaceRecognizerSF.feature feeds the network: RGB, unscaled, no mean
            net.setInput(cv2.dnn.blobFromImages(images, 1.0, (ALIGNED_SIZE, ALIGNED_SIZE), (0, 0, 0), True, False))
            return net.forward().reshape(len(images), -1).astype(np.float32)
        finally:
            self._free.put(net)


def create_embedder(config: EmbedderConfig | None = None) -> Embedder:
    """The backend named by `[embedder] type`: OpenCV (default) or PyTorch (the `torch` extra)."""
    config = config or EmbedderConfig()
    if config.type != "torch":
        return SFaceEmbedder(config)
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
