"""SFace in PyTorch: the committed ONNX model's own weights in an equivalent torch module.

The SFace graph is a plain chain (input scaling, Conv → BatchNorm → PReLU blocks, Flatten, Gemm,
BatchNorm), so it is rebuilt node by node from the ONNX initializers with the `onnx` package. A
BatchNorm right after a Conv or Gemm is folded into that layer's weights (the same maths in one pass).
An op or layout we do not know is a ModelError, never a silently different network.

Why a second backend: a batch of faces in one forward pass, CUDA where there is a GPU, and int8
(dynamic quantization of the 50176 → 128 fully connected layer, which holds most of the weights).
Alignment is OpenCV's `alignCrop` done here (same 5-point template and similarity fit), so this
backend needs no OpenCV copy of the network.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import structlog
import torch
from onnx import numpy_helper
from torch import nn

from facewatchd.vision.alignment import ALIGNED_SIZE, align_face
from facewatchd.vision.detector import Face
from facewatchd.vision.embedding import EMBEDDING_DIM, EmbedderConfig, mirrored, unit_features
from facewatchd.vision.models import SFACE, ModelError, verified_path

log = structlog.get_logger("facewatchd.embedder")

class InputScale(nn.Module):
    """The graph's own input normalisation: (x - shift) * factor."""

    def __init__(self, shift: float = 0.0, factor: float = 1.0) -> None:
        super().__init__()
        self.shift = shift
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.factor


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _scalar(weights: dict[str, np.ndarray], name: str) -> float:
    value = weights.get(name)
    if value is None or value.size != 1:
        raise ModelError(f"SFace graph: {name} is not a constant scalar")
    return float(value.reshape(()))


def _conv(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> nn.Conv2d:
    a = _attrs(node)
    w = weights[node.input[1]]
    pads = list(a.get("pads", [0, 0, 0, 0]))  # type: ignore[arg-type]
    if pads[:2] != pads[2:]:
        raise ModelError(f"SFace graph: asymmetric padding {pads} in {node.name or node.output[0]}")
    groups = int(a.get("group", 1))  # type: ignore[arg-type]
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1, 1])),
                     padding=tuple(pads[:2]), dilation=tuple(a.get("dilations", [1, 1])), groups=groups,
                     bias=len(node.input) > 2)
    conv.weight.data = torch.from_numpy(w.copy())
    if conv.bias is not None:
        conv.bias.data = torch.from_numpy(weights[node.input[2]].copy())
    return conv


def _linear(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> nn.Linear:
    a = _attrs(node)
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise ModelError(f"SFace graph: unsupported Gemm attributes {a}")
    w = weights[node.input[1]]
    w = w if a.get("transB", 0) else w.T
    linear = nn.Linear(w.shape[1], w.shape[0], bias=True)
    linear.weight.data = torch.from_numpy(np.ascontiguousarray(w))
    linear.bias.data = torch.from_numpy(weights[node.input[2]].copy() if len(node.input) > 2
                                        else np.zeros(w.shape[0], np.float32))
    return linear


def _batchnorm(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The inference-time BatchNorm as a per-channel (scale, shift)."""
    gamma, beta, mean, var = (torch.from_numpy(weights[n].astype(np.float64)) for n in node.input[1:5])
    eps = float(_attrs(node).get("epsilon", 1e-5))  # type: ignore[arg-type]
    scale = gamma / torch.sqrt(var + eps)
    return scale, beta - mean * scale


def _fold(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """layer followed by a per-output-channel affine → one layer."""
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bias = layer.bias.data.double() if layer.bias is not None else torch.zeros_like(scale)
    layer.weight.data = (layer.weight.data.double() * scale.reshape(shape)).float()
    layer.bias = nn.Parameter((bias * scale + shift).float())


def _affine(scale: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    bn = nn.BatchNorm2d(len(scale))  # an unfoldable BatchNorm: as eval-mode BatchNorm with unit variance
    bn.eval()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.data, bn.bias.data = scale.float(), shift.float()
    return bn


def build_sface(model: onnx.ModelProto) -> nn.Sequential:
    """The ONNX SFace graph as an nn.Sequential in eval mode."""
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    current = graph.input[0].name
    layers: list[nn.Module] = []
    for node in graph.node:
        if node.input[0] != current or len(node.output) != 1:
            raise ModelError(f"SFace graph: node {node.op_type} {node.name!r} does not continue the chain")
        current = node.output[0]
        op = node.op_type
        if op == "Sub":
            layers.append(InputScale(shift=_scalar(weights, node.input[1])))
        elif op == "Mul":
            if layers and isinstance(layers[-1], InputScale) and layers[-1].factor == 1.0:
                layers[-1].factor = _scalar(weights, node.input[1])
            else:
                layers.append(InputScale(factor=_scalar(weights, node.input[1])))
        elif op == "Conv":
            layers.append(_conv(node, weights))
        elif op == "BatchNormalization":
            scale, shift = _batchnorm(node, weights)
            if layers and isinstance(layers[-1], (nn.Conv2d, nn.Linear)):
                _fold(layers[-1], scale, shift)  # type: ignore[arg-type]
            else:
                layers.append(_affine(scale, shift))
        elif op == "PRelu":
            slope = weights[node.input[1]].reshape(-1)
            prelu = nn.PReLU(len(slope))
            prelu.weight.data = torch.from_numpy(slope.copy())
            layers.append(prelu)
        elif op == "Dropout":
            continue  # identity at inference
        elif op == "Flatten":
            if int(_attrs(node).get("axis", 1)) != 1:  # type: ignore[arg-type]
                raise ModelError("SFace graph: Flatten with axis != 1")
            layers.append(nn.Flatten())
        elif op == "Gemm":
            layers.append(_linear(node, weights))
        else:
            raise ModelError(f"SFace graph: op {op} is not supported by the torch backend")
    if current != graph.output[0].name:
        raise ModelError(f"SFace graph: the chain ends at {current}, not at the output {graph.output[0].name}")
    return nn.Sequential(*layers).eval()


def quantize_int8(net: nn.Sequential) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (weights int8, activations quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # eager-mode quantization is deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore")
        return quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError('embedder.device = "cuda" but torch sees no CUDA device (this torch build: '
                         f"{torch.__version__})")
    return torch.device(device)


def _chunks(items: Sequence[np.ndarray], size: int) -> Iterator[Sequence[np.ndarray]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class TorchSFaceEmbedder:
    """SFaceEmbedder's interface (align, embed_aligned, embed) plus embed_batch, on PyTorch."""

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig(type="torch")
        path = verified_path(SFACE, self.config.model_path)
        try:
            net: nn.Module = build_sface(onnx.load(path))
        except (KeyError, ValueError) as e:
            raise ModelError(f"cannot build SFace from {path}: {e}") from e
        self.device = torch.device("cpu") if self.config.int8 else resolve_device(self.config.device)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)  # one face at a time: more threads cost more than they give
        if self.config.int8:
            net = quantize_int8(net)  # type: ignore[arg-type]
        # channels-last: oneDNN's fast path for the 1x1 and depthwise convolutions (about 25% less CPU here)
        self._net = net.to(self.device, memory_format=torch.channels_last).eval()
        log.info("embedder_loaded", backend="torch", device=str(self.device), int8=self.config.int8,
                 batch_size=self.config.batch_size, threads=torch.get_num_threads())

    def align(self, frame: np.ndarray, face: Face) -> np.ndarray:
        """The 112x112 aligned face crop SFace was trained on (what alignCrop returns)."""
        return align_face(frame, face)

    def embed_batch(self, aligned: Sequence[np.ndarray], mirror: bool | None = None) -> np.ndarray:
        """(N, 128) L2-normalised embeddings, `batch_size` faces per forward pass; with `flip` (unless
        `mirror` is False), each the normalised mean of the face and its mirror image, as the OpenCV
        backend computes it."""
        return self.embed_batch_with_norms(aligned, mirror)[0]

    def embed_batch_with_norms(self, aligned: Sequence[np.ndarray], mirror: bool | None = None) \
            -> tuple[np.ndarray, np.ndarray]:
        """embed_batch, and each face's feature norm before normalisation (as the OpenCV backend)."""
        flip = self.config.flip and mirror is not False
        images = list(aligned) + ([mirrored(a) for a in aligned] if flip else [])
        return unit_features(self._features(images), len(aligned), flip)

    def _features(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """Raw (unnormalised) features."""
        out = np.zeros((len(aligned), EMBEDDING_DIM), np.float32)
        row = 0
        for chunk in _chunks(aligned, self.config.batch_size):
            for a in chunk:
                if a.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
                    raise ValueError(f"expected a 112x112 BGR aligned face, got shape {a.shape}")
            # BGR uint8 HWC → RGB float NCHW, as cv2.dnn.blobFromImage(swapRB=True) feeds OpenCV's SFace
            batch = torch.from_numpy(np.stack(chunk)[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32))
            with torch.inference_mode():
                features = self._net(batch.to(self.device).contiguous(memory_format=torch.channels_last))
            out[row:row + len(chunk)] = features.float().cpu().numpy()
            row += len(chunk)
        return out

    def embed_aligned(self, aligned: np.ndarray, mirror: bool | None = None) -> np.ndarray:
        return self.embed_batch([aligned], mirror)[0]

    def embed(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_aligned(self.align(frame, face))
