import numpy as np

from facewatchd.outbox import Outbox
from facewatchd.pipeline.tracker import Tracker, TrackerConfig
from facewatchd.vision.detector import Face


def face(x: float, y: float, s: float = 50) -> Face:
    return Face((x, y, s, s), np.zeros((5, 2), np.float32), 0.9)


def test_tracker_follows_a_moving_face_and_ends_it():
    t = Tracker("cam", TrackerConfig(max_missed=2))
    first = t.update([face(0, 0)], 1, 0.0)
    assert len(first.started) == 1
    tid = first.started[0].id
    for i in range(1, 10):
        u = t.update([face(i * 5, 0)], i + 1, i)
        assert not u.started and [x.id for x in u.continued] == [tid]
    ended = []
    for i in range(3):
        ended += t.update([], 20 + i, 20 + i).ended
    assert [x.id for x in ended] == [tid]


def test_tracker_two_faces_two_tracks():
    t = Tracker("cam")
    u = t.update([face(0, 0), face(300, 0)], 1, 0)
    assert len(u.started) == 2 and u.started[0].id != u.started[1].id
    u = t.update([face(302, 0), face(2, 0)], 2, 1)
    assert not u.started and len(u.continued) == 2


def test_each_face_stays_on_its_own_track_whatever_the_detection_order():
    t = Tracker("cam")
    left, right = t.update([face(0, 0), face(60, 0)], 1, 0).started  # neighbours: their boxes almost touch
    for i in range(1, 6):  # they drift right, listed in alternating order; the boxes overlap their old selves
        faces = [face(60 + 4 * i, 0), face(4 * i, 0)] if i % 2 else [face(4 * i, 0), face(60 + 4 * i, 0)]
        u = t.update(faces, i + 1, i)
        assert not u.started and not u.ended
        assert (left.face.box[0], right.face.box[0]) == (4 * i, 60 + 4 * i)  # never swapped


def test_outbox_durable_and_bounded(tmp_path):
    box = Outbox(tmp_path / "o.db", max_rows=2)
    box.put("a", b"1", now=1)
    box.put("b", b"2", now=2)
    assert box.put("c", b"3", now=3) == ["a"]  # oldest dropped
    box.close()
    box = Outbox(tmp_path / "o.db", max_rows=2)
    assert [i.face_id for i in box.due(now=10)] == ["b", "c"]
    box.attempted("b", next_attempt=100)
    assert [i.face_id for i in box.due(now=10)] == ["c"]
    assert box.remove("c") and not box.remove("c")
    assert len(box) == 1
