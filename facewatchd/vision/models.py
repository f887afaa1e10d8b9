"""The committed ONNX models, located and verified by sha256 before OpenCV loads them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"


class ModelError(RuntimeError):
    """A model file is missing or is not the file we expect."""


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str

    @property
    def default_path(self) -> Path:
        return MODELS_DIR / self.name


YUNET = ModelFile(
    "face_detection_yunet_2023mar.onnx",
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
)
SFACE = ModelFile(
    "face_recognition_sface_2021dec.onnx",
    "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
)
# Presentation-attack detectors (minivision-ai/Silent-Face-Anti-Spoofing), exported to ONNX; see MODELS.md
LIVENESS_V2 = ModelFile(
    "2.7_80x80_MiniFASNetV2.onnx",
    "5ae031395f3371ed759e5af28287159815370753b7d679253decfd3d4a5d89fe",
)
LIVENESS_V1SE = ModelFile(
    "4_0_0_80x80_MiniFASNetV1SE.onnx",
    "4d540738e4b1ce77fea69d74922e1db45732d925f9344b7ed2ffb936013b41f3",
)


def verified_path(model: ModelFile, path: Path | str | None = None) -> str:
    """Return the model's path after checking it exists and has the published sha256."""
    p = Path(path) if path else model.default_path
    if not p.is_file():
        raise ModelError(f"model file {p} is missing (expected {model.name}, see facewatchd/vision/models/MODELS.md)")
    with p.open("rb") as f:  # in chunks: reading the 37 MB file whole would raise the daemon's peak memory
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != model.sha256:
        raise ModelError(f"model file {p} has sha256 {digest}, expected {model.sha256} ({model.name}); "
                         "the file is corrupt or a different model")
    return str(p)
