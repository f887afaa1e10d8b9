import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewatchd.vision.detector import DetectorConfig, YuNetDetector
from facewatchd.vision.embedder import SFACE_COSINE_THRESHOLD, EmbedderConfig, SFaceEmbedder, cosine
from facewatchd.vision.models import SFACE, YUNET, ModelError, verified_path

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def embedder() -> SFaceEmbedder:
    return SFaceEmbedder()


def embed_all(detector, embedder, name):
    image = cv2.imread(str(FIXTURES / name))
    return [embedder.embed(image, f) for f in detector.detect(image)]


def test_models_verify_sha256():
    assert verified_path(YUNET).endswith(YUNET.name)
    assert verified_path(SFACE).endswith(SFACE.name)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        YuNetDetector(DetectorConfig(model_path=tmp_path / "nope.onnx"))


def test_wrong_model_is_a_clear_error(tmp_path):
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(verified_path(YUNET), wrong)
    with wrong.open("ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="sha256"):
        SFaceEmbedder(EmbedderConfig(model_path=wrong))


def test_same_person_matches_and_other_does_not(detector, embedder):
    obama = embed_all(detector, embedder, "obama.jpg")
    obama1 = embed_all(detector, embedder, "obama1.jpg")
    biden = embed_all(detector, embedder, "biden.jpg")
    assert len(obama) == len(obama1) == len(biden) == 1
    assert cosine(obama[0], obama1[0]) > SFACE_COSINE_THRESHOLD
    assert cosine(obama[0], biden[0]) < SFACE_COSINE_THRESHOLD
    assert abs(float(np.linalg.norm(obama[0])) - 1.0) < 1e-5


def test_boxes_map_back_to_full_frame(detector):
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    faces = detector.detect(image)
    assert len(faces) == 29  # every face in the photo, at the default threshold 0.7
    h, w = image.shape[:2]
    for f in faces:
        x, y, bw, bh = f.box
        assert 0 <= x < w and 0 <= y < h and bw >= 24  # full-frame pixels, not the 640 px detection size


def test_bad_frame_is_rejected(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_embedder_runs_passes_from_several_threads_at_once(detector):
    """The daemon embeds on more than one thread: concurrent calls on one SFaceEmbedder each get a network
    of their own (one OpenCV network running two passes at once fails or mixes their buffers)."""
    import threading

    embedder = SFaceEmbedder()
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    aligned = [embedder.align(image, f) for f in detector.detect(image)[:8]]
    expected = [embedder.embed_batch([a]) for a in aligned]  # one at a time
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def embed(worker: int) -> None:
        start.wait()
        try:
            results[worker] = [embedder.embed_batch([a]) for a in aligned for _ in range(3)][::3]
        except BaseException as e:  # noqa: BLE001 - an OpenCV assertion on a shared network
            errors.append(e)

    threads = [threading.Thread(target=embed, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for worker in range(4):
        for got, want in zip(results[worker], expected):
            assert float(got[0] @ want[0]) > 0.9999
    assert embedder._free.qsize() >= 2  # the networks loaded for the passes that overlapped were kept for reuse


def test_a_bounded_embedder_waits_for_its_network_rather_than_load_another(detector):
    """networks=1 (the daemon's, shared with its embedded resolver): a pass that finds the one network busy
    waits for it and gets the same embedding; no second copy (about 80 MB) is loaded."""
    import threading

    embedder = SFaceEmbedder(networks=1)
    image = cv2.imread(str(FIXTURES / "obama.jpg"))
    aligned = embedder.align(image, detector.detect(image)[0])
    expected = embedder.embed_aligned(aligned)
    busy = embedder._free.get()  # another thread is mid-pass on the one network
    got: list[np.ndarray] = []
    waiting = threading.Thread(target=lambda: got.append(embedder.embed_aligned(aligned)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive() and not got  # it waits, where an unbounded embedder loads another network
    embedder._free.put(busy)
    waiting.join(30)
    assert not waiting.is_alive() and float(got[0] @ expected) > 0.9999
    assert embedder._free.qsize() == 1


def test_one_detector_serves_several_threads_with_a_network_each_at_a_time():
    """The daemon's one detector for every camera: passes from two threads at once each get a network of
    their own at that input size (never one network running two inputs), the same faces as one at a time;
    only as many networks are kept as ran at once, not one per camera."""
    import threading

    detector = YuNetDetector()
    image = cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))
    expected = [f.box for f in detector.detect(image)]
    start, errors, results = threading.Barrier(2), [], []

    def detect() -> None:
        start.wait()
        try:
            results.extend([f.box for f in detector.detect(image)] for _ in range(5))
        except BaseException as e:  # noqa: BLE001 - an OpenCV assertion on a shared network
            errors.append(e)

    threads = [threading.Thread(target=detect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 10 and all(r == expected for r in results)
    assert sum(q.qsize() for q in detector._free.values()) <= 2
