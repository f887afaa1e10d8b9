"""AWS IoT Device Shadow semantics of ShadowDocument: merge, null deletes, delta, versions, limits."""

from __future__ import annotations

import json

import pytest

from facewatchd.shadow.document import MAX_STATE_BYTES, ShadowDocument, ShadowError

T0, T1, T2 = 1_700_000_000, 1_700_000_010, 1_700_000_020


def doc_with(*requests: dict) -> ShadowDocument:
    doc = ShadowDocument()
    for i, request in enumerate(requests):
        doc.update(request, T0 + i)
    return doc


def test_first_update_creates_version_1_and_accepted_echoes_state_metadata_and_token() -> None:
    doc = ShadowDocument()
    r = doc.update({"state": {"desired": {"color": "red", "light": {"on": True}}}, "clientToken": "tok-1"}, T0)
    assert r.accepted == {
        "state": {"desired": {"color": "red", "light": {"on": True}}},
        "metadata": {"desired": {"color": {"timestamp": T0}, "light": {"on": {"timestamp": T0}}}},
        "version": 1, "timestamp": T0, "clientToken": "tok-1",
    }
    assert doc.version == 1 and doc.timestamp == T0
    assert r.documents["previous"] is None
    assert r.documents["current"] == {"state": {"desired": {"color": "red", "light": {"on": True}}},
                                      "metadata": {"desired": {"color": {"timestamp": T0},
                                                               "light": {"on": {"timestamp": T0}}}},
                                      "version": 1}
    assert r.documents["clientToken"] == "tok-1" and r.documents["timestamp"] == T0


def test_no_client_token_means_none_in_any_payload() -> None:
    r = ShadowDocument().update({"state": {"desired": {"a": 1}}}, T0)
    assert "clientToken" not in r.accepted
    assert r.delta is not None and "clientToken" not in r.delta
    assert "clientToken" not in r.documents


def test_delta_lists_desired_keys_missing_or_different_from_reported() -> None:
    doc = doc_with({"state": {"reported": {"color": "green", "power": "on", "extra": 1}}})
    r = doc.update({"state": {"desired": {"color": "red", "power": "on", "mode": "eco"}}, "clientToken": "c"}, T1)
    assert r.delta == {
        "state": {"color": "red", "mode": "eco"},
        "metadata": {"color": {"timestamp": T1}, "mode": {"timestamp": T1}},
        "version": 2, "timestamp": T1, "clientToken": "c",
    }
    assert doc.delta_state() == {"color": "red", "mode": "eco"}


def test_nested_objects_merge_and_delta_recurses() -> None:
    doc = doc_with({"state": {"reported": {"color": {"r": 255, "g": 255, "b": 0}}}})
    r = doc.update({"state": {"desired": {"color": {"r": 10}, "engine": "ON"}}}, T1)
    assert r.delta is not None
    assert r.delta["state"] == {"color": {"r": 10}, "engine": "ON"}
    assert r.delta["metadata"] == {"color": {"r": {"timestamp": T1}}, "engine": {"timestamp": T1}}
    doc.update({"state": {"desired": {"color": {"g": 0}}}}, T2)
    assert doc.desired == {"color": {"r": 10, "g": 0}, "engine": "ON"}
    assert doc.metadata["desired"]["color"] == {"r": {"timestamp": T1}, "g": {"timestamp": T2}}
    assert doc.delta_state() == {"color": {"r": 10, "g": 0}, "engine": "ON"}


def test_arrays_are_replaced_and_compared_whole() -> None:
    doc = doc_with({"state": {"reported": {"colors": ["RED", "GREEN", "BLUE"]}}},
                   {"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}})
    assert doc.delta_state() == {}
    doc.update({"state": {"desired": {"colors": ["RED"]}}}, T1)
    assert doc.desired == {"colors": ["RED"]}  # not merged element by element
    assert doc.delta_state() == {"colors": ["RED"]}  # the whole array, not the difference
    assert doc.metadata["desired"]["colors"] == [{"timestamp": T1}]


def test_json_types_differ_true_is_not_1_but_1_is_1_0() -> None:
    doc = doc_with({"state": {"reported": {"a": 1, "b": 2}}}, {"state": {"desired": {"a": True, "b": 2.0}}})
    assert doc.delta_state() == {"a": True}


def test_null_deletes_a_key_and_empty_objects_disappear() -> None:
    doc = doc_with({"state": {"desired": {"faces": {"f1": {"name": "Ann"}, "f2": {"name": "Bob"}}, "x": 1}}})
    r = doc.update({"state": {"desired": {"faces": {"f1": None}}}}, T1)
    assert doc.desired == {"faces": {"f2": {"name": "Bob"}}, "x": 1}
    assert r.accepted["state"] == {"desired": {"faces": {"f1": None}}}  # the request as sent
    assert r.accepted["metadata"] == {"desired": {"faces": {"f1": {"timestamp": T1}}}}
    doc.update({"state": {"desired": {"faces": {"f2": {"name": None}}}}}, T2)
    assert doc.desired == {"x": 1}  # f2 became empty, then faces did
    assert "faces" not in doc.metadata["desired"]
    doc.update({"state": {"desired": {"x": None, "missing": None}}}, T2)
    assert doc.desired == {} and "desired" not in doc.get_response()["state"]


def test_desired_null_removes_the_whole_section() -> None:
    doc = doc_with({"state": {"desired": {"a": 1, "b": {"c": 2}}, "reported": {"a": 0}}})
    r = doc.update({"state": {"reported": {"a": 1}, "desired": None}}, T1)
    assert doc.desired == {} and doc.reported == {"a": 1}
    assert "desired" not in doc.metadata
    assert r.delta is None
    assert r.documents["previous"]["state"]["desired"] == {"a": 1, "b": {"c": 2}}
    assert r.documents["current"]["state"] == {"reported": {"a": 1}}


def test_delta_is_published_after_every_update_while_desired_and_reported_differ() -> None:
    # AWS: the delta holds all differing attributes, whether or not this update touched them
    doc = doc_with({"state": {"desired": {"a": 1}}})
    assert doc.update({"state": {"reported": {"b": 2}}}, T1).delta["state"] == {"a": 1}  # type: ignore[index]
    assert doc.update({"state": {"reported": {"a": 1}}}, T1).delta is None  # now empty
    assert doc.update({"state": {"desired": {"a": 1}}}, T2).delta is None  # matches reported


def test_state_null_clears_the_state_and_other_top_level_fields_are_ignored() -> None:
    doc = doc_with({"state": {"desired": {"a": 1}, "reported": {"b": 2}}})
    r = doc.update({"state": None, "metadata": {"ignored": True}, "extra": 1}, T1)
    assert (doc.desired, doc.reported, r.delta) == ({}, {}, None) and doc.version == 2
    doc.update({"state": {"desired": {"c": 3}}, "timestamp": 5}, T2)  # an unknown field: ignored, not a 400
    assert doc.desired == {"c": 3}


def test_versions_increase_and_a_stale_version_is_rejected_409_without_change() -> None:
    doc = doc_with({"state": {"desired": {"a": 1}}})
    r = doc.update({"state": {"desired": {"a": 2}}, "version": 1}, T1)
    assert r.accepted["version"] == 2
    with pytest.raises(ShadowError) as e:
        doc.update({"state": {"desired": {"a": 3}}, "version": 1, "clientToken": "late"}, T2)
    assert e.value.code == 409 and e.value.message == "Version conflict"
    assert doc.desired == {"a": 2} and doc.version == 2
    rejected = e.value.to_rejected("late", now=T2)
    assert rejected == {"code": 409, "message": "Version conflict", "timestamp": T2, "clientToken": "late"}


def test_state_over_8_kb_is_rejected_413_without_change() -> None:
    doc = doc_with({"state": {"reported": {"blob": "x" * (MAX_STATE_BYTES // 2)}}})
    with pytest.raises(ShadowError) as e:
        doc.update({"state": {"desired": {"blob": "y" * (MAX_STATE_BYTES // 2)}}}, T1)
    assert e.value.code == 413 and "Payload too large" in e.value.message
    assert doc.desired == {} and doc.version == 1


def test_size_counts_compact_json_so_exactly_8192_bytes_fits() -> None:
    # the limit counts the desired and reported data, not the {"desired": …} wrapper around them
    overhead = len(json.dumps({"b": ""}, separators=(",", ":")))
    doc = ShadowDocument()
    doc.update({"state": {"desired": {"b": "z" * (MAX_STATE_BYTES - overhead)}}}, T0)
    with pytest.raises(ShadowError) as e:
        doc.update({"state": {"desired": {"c": 1}}}, T1)
    assert e.value.code == 413


@pytest.mark.parametrize(("request_", "fragment"), [
    ([1, 2], "JSON object"),
    ("state", "JSON object"),
    ({"desired": {"a": 1}}, "Missing required node: state"),
    ({"version": 1}, "Missing required node: state"),
    ({"state": [1]}, "State node must be an object"),
    ({"state": {"delta": {"a": 1}}}, "invalid node: 'delta'"),
    ({"state": {"desired": 5}}, "Desired node must be an object"),
    ({"state": {"reported": "x"}}, "Reported node must be an object"),
    ({"state": {"desired": {"a": 1}}, "version": "1"}, "Invalid version"),
    ({"state": {"desired": {"a": 1}}, "version": True}, "Invalid version"),
    ({"state": {"desired": {"a": 1}}, "clientToken": 7}, "Invalid clientToken"),
    ({"state": {"desired": {"a": 1}}, "clientToken": "t" * 65}, "Invalid clientToken"),
    ({"state": {"desired": {"a": [1, None]}}}, "null"),
    ({"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}, "nesting"),
])
def test_malformed_requests_are_rejected_400(request_: object, fragment: str) -> None:
    doc = ShadowDocument()
    with pytest.raises(ShadowError) as e:
        doc.update(request_, T0)
    assert e.value.code == 400
    assert fragment in e.value.message
    assert not doc.exists and doc.version == 0


def test_six_levels_are_allowed() -> None:
    doc = ShadowDocument()
    doc.update({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}}, T0)
    assert doc.reported["a"]["b"]["c"]["d"]["e"] == {"f": 1}


def test_get_response_includes_delta_metadata_and_token() -> None:
    doc = doc_with({"state": {"reported": {"a": 1}}}, {"state": {"desired": {"a": 2, "b": 3}}})
    assert doc.get_response("g1", now=T2) == {
        "state": {"desired": {"a": 2, "b": 3}, "reported": {"a": 1}, "delta": {"a": 2, "b": 3}},
        "metadata": {"desired": {"a": {"timestamp": T0 + 1}, "b": {"timestamp": T0 + 1}},
                     "reported": {"a": {"timestamp": T0}}},
        "version": 2, "timestamp": T2, "clientToken": "g1",
    }
    doc.update({"state": {"reported": {"a": 2, "b": 3}}}, T2)
    assert "delta" not in doc.get_response()["state"]


def test_json_round_trip_keeps_everything() -> None:
    doc = doc_with({"state": {"reported": {"a": 1, "l": [{"x": 1}]}}}, {"state": {"desired": {"a": 2}}})
    again = ShadowDocument.from_json(doc.to_json())
    assert again.get_response(now=T2) == doc.get_response(now=T2)
    assert again.exists and again.version == 2
    r = again.update({"state": {"desired": {"a": 3}}, "version": 2}, T2)
    assert r.accepted["version"] == 3


def test_new_document_continues_a_base_version() -> None:
    doc = ShadowDocument.new(base_version=7)
    assert doc.update({"state": {"desired": {"a": 1}}}, T0).accepted["version"] == 8
