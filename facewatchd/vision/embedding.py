"""What both embedder backends share: the embedding's size, the `[embedder]` config and the arithmetic on
raw features. Its own module so the torch backend need not import the module that chooses it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

EMBEDDING_DIM = 128


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

