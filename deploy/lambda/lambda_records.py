"""An SQS record read as a face query, or a poison message: one that can never succeed."""

from __future__ import annotations

from typing import Any, Mapping

from facewatchd.messages import FaceQuery, MessageError, strict_json, thing_from_uplink_topic

MAX_BODY_CHARS = 192 * 1024  # AWS IoT caps payloads at 128 KB; anything bigger did not come from a device
MAX_DLQ_BODY_CHARS = 200 * 1024  # keeps the DLQ message under SQS's 256 KB


class Poison(Exception):
    """A message that can never succeed: dead-lettered with its reason, never retried."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class Kept(Exception):
    """A poison message that could not be dead-lettered: failed, so SQS keeps it (its redrive policy
    moves it to the DLQ after a few receives)."""


def _kind(e: MessageError) -> str:
    text = str(e)
    if text.startswith("crop: not a JPEG"):
        return "not_jpeg"
    if text.startswith("crop:") and "more than" in text:
        return "too_large"
    return "schema"


def parse_record(record: Mapping[str, Any]) -> FaceQuery:
    body = record.get("body")
    if not isinstance(body, str):
        raise Poison("schema", "SQS record has no body")
    if len(body) > MAX_BODY_CHARS:
        raise Poison("too_large", f"body: {len(body)} characters, more than {MAX_BODY_CHARS}")
    try:
        doc = strict_json(body)  # NaN and Infinity are Python's, not JSON
    except ValueError as e:
        raise Poison("not_json", f"not JSON: {e}") from None
    except RecursionError:
        raise Poison("not_json", "not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise Poison("schema", "expected a JSON object")
    topic = doc.get("topic")
    if not isinstance(topic, str):
        raise Poison("schema", "topic: missing (the IoT rule adds topic())")
    try:
        return FaceQuery.from_json(body, thing=thing_from_uplink_topic(topic))
    except MessageError as e:
        raise Poison(_kind(e), str(e)) from None
