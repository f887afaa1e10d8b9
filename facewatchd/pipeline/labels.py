"""Labels from the device shadow's delta (`desired.faces`, `desired.persons`): names, refusals, rejections,
merges and forgetting, applied to the recognizer; what the shadow must clear and report comes back."""

from __future__ import annotations

from typing import Any

import structlog

from facewatchd.messages import clamp_similarity
from facewatchd.pipeline.recognizer import Recognizer

log = structlog.get_logger("facewatchd.daemon")


def apply_delta(rec: Recognizer, delta: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply labels from a shadow delta to the recognizer (its cache and live tracks); returns the desired keys
    to clear and what to report."""
    clear: dict[str, Any] = {}
    if not isinstance(delta, dict):
        log.warning("delta_malformed", reason="not an object")
        return clear, {}
    faces = delta.get("faces")
    if isinstance(faces, dict):
        for face_id, label in faces.items():
            clear.setdefault("faces", {})[face_id] = None
            if isinstance(label, dict) and label.get("reject") is True:  # "not this person"
                rec.reject_face(face_id)
                continue
            if isinstance(label, dict) and isinstance(label.get("unresolvable"), str):  # a refusal
                rec.unresolvable(face_id, label["unresolvable"])
                continue
            # A shadow cannot hold null (null deletes a key), so "no name" arrives as a missing name.
            if not (isinstance(label, dict) and isinstance(label.get("person_id"), str)
                    and isinstance(label.get("name"), (str, type(None)))):
                log.warning("delta_malformed", face_id=face_id, reason="label needs person_id and name")
                continue
            # what the door counts as evidence: never past what a cosine can be, whoever wrote it
            rec.apply_label(face_id, label["person_id"], label.get("name"),
                            clamp_similarity(label.get("similarity", 0.0)))
    elif faces is not None:
        log.warning("delta_malformed", reason="faces is not an object")
        clear["faces"] = None
    persons = delta.get("persons")
    if isinstance(persons, dict):
        for person_id, change in persons.items():
            clear.setdefault("persons", {})[person_id] = None
            if not (isinstance(change, dict) and isinstance(change.get("name"), (str, type(None)))
                    and isinstance(change.get("forget", False), bool)
                    and isinstance(change.get("merge_into"), (str, type(None)))):
                log.warning("delta_malformed", person_id=person_id, reason="person change needs a name or forget")
                continue
            if change.get("merge_into"):
                rec.merge_person(person_id, change["merge_into"], change.get("name"))
            else:
                rec.apply_person(person_id, change.get("name"), change.get("forget", False))
    elif persons is not None:
        log.warning("delta_malformed", reason="persons is not an object")
        clear["persons"] = None
    reported = {"labels_applied": rec.stats.labels_applied, "cache_entries": len(rec.cache)}
    return clear, reported
