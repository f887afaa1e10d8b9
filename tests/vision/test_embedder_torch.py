"""The PyTorch backend: the same SFace weights give the same embeddings as OpenCV, batched or not."""

import shutil

import cv2
import numpy as np
import pytest
import torch  # the torch extra: `make test` installs it

from facewatchd.app.config import parse_config
from facewatchd.config import ConfigError
from facewatchd.vision.detector import YuNetDetector
from facewatchd.vision.embedder import EmbedderConfig, SFaceEmbedder, create_embedder
from facewatchd.vision.embedder_torch import TorchSFaceEmbedder
from facewatchd.vision.models import ModelError  # noqa: E402
from tests.support.daemon import FIXTURES, make_config, run_daemon  # noqa: E402

PHOTOS = ["obama.jpg", "obama1.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg", "obama_small.jpg"]


@pytest.fixture(scope="module")
def faces():
    """(image, face) for every face in the public-domain photos."""
    detector = YuNetDetector()
    found = []
    for name in PHOTOS:
        image = cv2.imread(str(FIXTURES / name))
        found += [(image, f) for f in detector.detect(image)]
    assert len(found) >= len(PHOTOS) + 1  # two_people.jpg has two
    return found


@pytest.fixture(scope="module")
def opencv():
    return SFaceEmbedder()


@pytest.fixture(scope="module")
def torch_fp32():
    return create_embedder(EmbedderConfig(type="torch", batch_size=4))


def test_factory_picks_the_backend(torch_fp32, opencv):
    assert isinstance(torch_fp32, TorchSFaceEmbedder)
    assert isinstance(create_embedder(EmbedderConfig()), SFaceEmbedder)


def test_alignment_matches_opencv_align_crop(faces, opencv, torch_fp32):
    for image, face in faces:
        ours = torch_fp32.align(image, face).astype(int)
        theirs = opencv.align(image, face).astype(int)
        assert ours.shape == theirs.shape == (112, 112, 3)
        assert np.abs(ours - theirs).max() <= 2  # float rounding in the warp, nothing more
        assert np.abs(ours - theirs).mean() < 0.05


def test_embeddings_match_opencv(faces, opencv, torch_fp32):
    for image, face in faces:
        aligned = opencv.align(image, face)
        ours, theirs = torch_fp32.embed_aligned(aligned), opencv.embed_aligned(aligned)
        assert ours.shape == (128,) and ours.dtype == np.float32
        assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
        assert float(ours @ theirs) >= 0.999
        assert float(torch_fp32.embed(image, face) @ opencv.embed(image, face)) >= 0.999


def test_batches_give_the_same_vectors_as_one_by_one(faces, torch_fp32):
    aligned = [torch_fp32.align(image, face) for image, face in faces]  # more faces than batch_size = 4
    batched = torch_fp32.embed_batch(aligned)
    single = np.stack([torch_fp32.embed_aligned(a) for a in aligned])
    assert batched.shape == (len(aligned), 128)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert torch_fp32.embed_batch([]).shape == (0, 128)


def test_people_stay_apart(faces, torch_fp32):
    by_photo = {}
    detector = YuNetDetector()
    for name in ("obama.jpg", "obama1.jpg", "biden.jpg"):
        image = cv2.imread(str(FIXTURES / name))
        by_photo[name] = torch_fp32.embed(image, detector.detect(image)[0])
    assert float(by_photo["obama.jpg"] @ by_photo["obama1.jpg"]) > 0.363
    assert float(by_photo["obama.jpg"] @ by_photo["biden.jpg"]) < 0.363


def test_int8_stays_close_to_fp32(faces, torch_fp32):
    int8 = create_embedder(EmbedderConfig(type="torch", int8=True))
    assert "quantized" in type(int8._net[-1]).__module__  # the 50176 → 128 layer really is int8
    aligned = [torch_fp32.align(image, face) for image, face in faces]
    cos = np.sum(int8.embed_batch(aligned) * torch_fp32.embed_batch(aligned), axis=1)
    assert cos.min() >= 0.99


def test_bad_input_is_a_clear_error(torch_fp32):
    with pytest.raises(ValueError, match="112x112"):
        torch_fp32.embed_batch([np.zeros((100, 100, 3), np.uint8)])


def test_config_options_are_validated():
    cfg = parse_config({"embedder": {"type": "torch", "device": "auto", "int8": True, "batch_size": 8, "threads": 2}})
    e = cfg.embedder
    assert (e.device, e.int8, e.batch_size, e.threads) == ("auto", True, 8, 2)
    with pytest.raises(ConfigError, match="embedder"):
        parse_config({"embedder": {"type": "opencv", "device": "cuda"}})  # a torch option on OpenCV
    with pytest.raises(ConfigError, match="int8"):
        parse_config({"embedder": {"type": "torch", "device": "cuda", "int8": True}})
    with pytest.raises(ConfigError, match="embedder.batch_size"):
        parse_config({"embedder": {"type": "torch", "batch_size": 0}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ModelError, match="no CUDA device"):
        create_embedder(EmbedderConfig(type="torch", device="cuda"))
    assert create_embedder(EmbedderConfig(type="torch", device="auto")).device.type == "cpu"


def test_wrong_model_file_is_refused(tmp_path):
    wrong = tmp_path / "sface.onnx"
    shutil.copy(FIXTURES / "obama.jpg", wrong)
    with pytest.raises(ModelError, match="sha256"):
        create_embedder(EmbedderConfig(type="torch", model_path=wrong))


def test_daemon_runs_on_the_torch_backend(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, name in enumerate(["obama.jpg", "obama1.jpg", "biden.jpg"]):
        shutil.copy(FIXTURES / name, frames / f"{i:02d}.jpg")
    cfg = make_config(tmp_path / "state", frames, embedder={"type": "torch"})
    first = run_daemon(cfg)
    assert first.frames == 3 and first.embeds >= 3
    assert len(first.persons) == 2  # Obama twice (the cache or the resolver knows him), Biden once
    again = run_daemon(make_config(tmp_path / "state", frames, embedder={"type": "torch"}))
    assert again.resolver_calls == 0  # the torch vectors went into the cache and match themselves
