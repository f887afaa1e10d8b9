"""Each benchmark script runs end to end on the public-domain fixtures and prints a sane JSON line.

Tiny inputs only: what is measured here is that the scripts work, not the figures (`make bench`).
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.support.daemon import FIXTURES, ROOT, SAMPLE_CLIP

BENCH = ROOT / "bench"


def run_script(name, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(BENCH / name), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])  # the last line is the JSON result, the table comes before it
    assert len(lines) > 1, "the table is missing"
    return result


@pytest.fixture
def faces_dir(tmp_path):
    """obama/ with four photos and biden/ with one, plus nobody/ with a photo without a face."""
    root = tmp_path / "faces"
    for person, photos in {"obama": ["obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg"],
                           "biden": ["biden.jpg"]}.items():
        (root / person).mkdir(parents=True)
        for photo in photos:
            shutil.copy(FIXTURES / photo, root / person / photo)
    (root / "nobody").mkdir()
    cv2.imwrite(str(root / "nobody" / "wall.jpg"), np.full((200, 200, 3), 127, np.uint8))
    return root


def test_accuracy(tmp_path, faces_dir):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join([
        "obama\tobama.jpg\tobama1.jpg", "obama\tobama2.jpg\tobama3.jpg", "obama\tobama.jpg\tobama3.jpg",
        "obama\tobama.jpg\tbiden\tbiden.jpg", "obama\tobama1.jpg\tbiden\tbiden.jpg",
        "obama\tobama2.jpg\tnobody\twall.jpg",  # no face: counted as an error, not dropped
    ]) + "\n")
    r = run_script("accuracy.py", "--pairs", pairs, "--images", faces_dir)
    assert (r["pairs"], r["same_pairs"], r["different_pairs"], r["images"]) == (6, 3, 3, 6)
    assert r["detection_failures"] == 1 and r["pairs_with_failure"] == 1
    # every pair with faces is right for SFace at its own threshold; the faceless one is an error
    assert r["configured"]["accuracy"] == pytest.approx(5 / 6)
    assert r["configured"]["tar"] == 1.0 and r["configured"]["far"] == 0.0
    assert r["unlock"]["threshold"] == 0.52  # the door plugin's default
    assert r["kfold"]["folds"] == 6 and 0.5 <= r["kfold"]["accuracy"] <= 5 / 6
    assert set(r["tar_at_far"]) == {"0.01", "0.001"}
    assert all(0 <= m["tar"] <= 1 and not m["resolvable"] for m in r["tar_at_far"].values())


def test_accuracy_on_lfw_numbered_names_with_the_torch_backend(tmp_path):
    images = tmp_path / "lfw"
    (images / "Barack_Obama").mkdir(parents=True)
    (images / "Joe_Biden").mkdir(parents=True)
    for i, photo in enumerate(["obama.jpg", "obama1.jpg", "obama2.jpg"], start=1):
        shutil.copy(FIXTURES / photo, images / "Barack_Obama" / f"Barack_Obama_{i:04d}.jpg")
    shutil.copy(FIXTURES / "biden.jpg", images / "Joe_Biden" / "Joe_Biden_0001.jpg")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nBarack_Obama\t1\t2\nBarack_Obama\t1\tJoe_Biden\t1\n"
                     "Barack_Obama\t2\t3\nBarack_Obama\t3\tJoe_Biden\t1\n")
    r = run_script("accuracy.py", "--pairs", pairs, "--images", images, "--backend", "torch", "--int8")
    assert r["backend"] == "torch-int8" and r["detection_failures"] == 0
    assert r["kfold"]["folds"] == 2
    assert r["configured"]["accuracy"] == 1.0


def test_visits(faces_dir):
    shutil.rmtree(faces_dir / "nobody")
    r = run_script("visits.py", "--faces", faces_dir, "--people", 2, "--visits", 4, "--seed", 1)
    s = r["stream"]
    assert s["people"] == 2 and s["visits"] == 4 and s["return_visits"] == 2 and s["frames"] > 50
    assert s["detections"] > 50 and s["embeddings_computed_again"] == 0
    p = r["policies"]
    assert set(p) == {"facewatchd", "per-frame", "seed-workshop", "per-track"}
    for m in p.values():
        assert {"resolver_calls", "calls_per_visit", "calls_per_person", "calls_per_new_person",
                "calls_per_return_visit", "merges", "splits", "wrong_name_faces", "frames_to_id_new_median",
                "frames_to_name_known_median"} <= set(m)
    # every detected face of a drawn person is a per-frame call; per-track is one call per track
    assert p["per-frame"]["resolver_calls"] == s["detections"] - s["detections_without_truth"]
    assert p["per-track"]["resolver_calls"] >= s["visits"]
    fw = p["facewatchd"]
    assert 1 <= fw["resolver_calls"] <= p["per-track"]["resolver_calls"]
    assert fw["calls_per_return_visit"] == 0  # Obama and Biden come back and are known
    assert fw["wrong_name_faces"] == 0 and fw["merges"] == 0
    assert fw["known_visits"] == 2 and fw["known_visits_never_named"] == 0
    assert set(r["targets"]) and all(isinstance(v, (bool, type(None))) for v in r["targets"].values())


def test_openset(faces_dir):
    shutil.rmtree(faces_dir / "nobody")
    r = run_script("openset.py", "--images", faces_dir, "--gallery", 1)
    assert r["gallery"] == 1 and {"fpir", "fnir", "door", "table"} <= set(r)
    # Obama enrolled from one photo, probed with another; Biden is the stranger: neither error happens
    assert r["fpir"] == 0.0 and r["fnir"] == 0.0
    row = r["table"]["1"]["default"]
    assert row["strangers"] == 1 and row["mated"] == 1 and row["threshold"] >= 0.42


def test_openset_on_postgresql_gives_the_sqlite_figures(faces_dir):
    """The same gallery and probes over the PostgreSQL adapters (HNSW `<=>`) and the SQLite matrix."""
    shutil.rmtree(faces_dir / "nobody")
    sqlite = run_script("openset.py", "--images", faces_dir, "--gallery", 1)
    postgres = run_script("openset.py", "--images", faces_dir, "--gallery", 1, "--collection", "postgresql")
    assert (sqlite["collection"], postgres["collection"]) == ("sqlite", "postgresql")
    assert postgres["table"] == sqlite["table"] and postgres["table"]["1"]["default"]["mated"] == 1


def test_throughput():
    r = run_script("throughput.py", SAMPLE_CLIP, "--frames", 30, "--quick")
    runs, ratios = r["runs"], r["ratios"]
    assert runs["detector"]["frames"] == 120 and runs["detector"]["once"]["frames"] == 30
    for key in ("detector", "facewatchd", "facewatchd_no_reverify", "detector_idle", "idle"):
        assert runs[key]["ms_per_frame"] > 0 and runs[key]["peak_rss_mb"] > 20
    # The daemon sees what the detector sees, but for a face at the size floor (24-26 px here) that a region
    # cut finds in a frame where the full frame's does not, or the other way round
    assert abs(runs["facewatchd"]["faces"] - runs["detector"]["faces"]) <= 0.02 * runs["detector"]["faces"]
    assert runs["detector"]["faces"] > 0
    # the empty scene is gated after its first frame (and the refresh bound), and the gate misses no visit
    assert runs["idle"]["gated"] >= runs["idle"]["frames"] - 10 and runs["idle"]["faces"] == 0
    assert ratios["visits_same_tracks"] and runs["visits"]["tracks"] >= 3 and ratios["visits_gated_share"] > 0.3
    assert runs["many_faces"]["faces"] == 29
    assert 0 < ratios["idle_vs_detector"] < ratios["marginal_vs_detector"]
    assert set(r["targets_met"]) <= set(ratios)


def test_cameras(tmp_path):
    """Two cameras of a short cut of the clip, each run beside a baseline copy of the same code."""
    clip = tmp_path / "clip.avi"
    cap, writer = cv2.VideoCapture(str(SAMPLE_CLIP)), None
    for _ in range(30):
        ok, image = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, image.shape[1::-1])
        writer.write(image)
    writer.release()
    r = run_script("cameras.py", clip, "--cameras-list", "1,2", "--baseline", ROOT)
    assert [row["cameras"] for row in r["this"]["runs"]] == [1, 2]
    one, two = r["this"]["runs"]
    assert 8 <= one["frames"] <= 10 and two["frames"] == 2 * one["frames"]  # 30 frames at 30 fps, capped at 10 fps
    assert two["cpu_s"] > 0 and two["cores"] > 0 and two["peak_rss_mb"] > 0 and "loop" in two["threads_cpu_s"]
    assert set(r["cpu_ratio_this_vs_baseline"]) == {"1", "2"} and r["baseline"]["runs"][1]["frames"] == two["frames"]


def test_cache_match():
    r = run_script("cache_match.py", "--entries", 2000, "--calls", 200)
    assert r["entries"] == 2000 and r["calls"] == 200
    assert r["known_hit_rate"] == 1.0
    for kind in ("known", "unknown", "co_visible"):
        assert 0 < r[kind]["median_ms"] <= r[kind]["p99_ms"]
    assert isinstance(r["target_median_lt_1ms"], bool)


def test_liveness_bench_runs(tmp_path):
    # one "person" with two photos (enrolled from one, attacked with the other), a few frames each
    person = tmp_path / "lfw" / "Barack_Obama"
    person.mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg"):
        shutil.copy(FIXTURES / name, person / name)
    result = run_script("liveness.py", "--lfw", tmp_path / "lfw", "--spoof", FIXTURES / "spoof", "--people", 1,
                        "--frames", 12, "--no-door", timeout=400)
    assert set(result["frame"]) == {"print", "screen photo", "close-up", "cut-out", "screen video", "bona fide"}
    assert result["frame"]["bona fide"]["frames"] > 500 and 0 <= result["frame"]["bona fide"]["bpcer"] <= 1
    assert result["pictures"]["image_T1.jpg"] > 0.9 and result["pictures"]["image_F2.jpg"] < 0.1


def test_onprem_scale(faces_dir):
    r = run_script("onprem_scale.py", "--workers", "2", "--faces", "2", "--persons", "50", "--images", faces_dir,
                   "--search-sizes", "100", "--probes", "2")
    assert (r["workers"], r["killed"], r["requests"], r["lost"], r["duplicate_persons"]) == (2, False, 4, 0, 0)
    assert r["throughput_rps"] > 0 and r["p95_ms"] > 0
    assert r["persons_in_collection"] == 50 + 2  # the synthetic ones and the two people, each once
    assert [s["size"] for s in r["search"]] == [100] and r["search"][0]["postgres"]["p95_ms"] > 0
    # obama's second photo finds his first among 100 synthetic persons, in the index and in the matrix
    assert r["search"][0]["postgres"]["mated_found"] == r["search"][0]["sqlite"]["mated_found"] == 1.0
    assert 0 <= r["search"][0]["postgres"]["recall_at_1"] <= 1
