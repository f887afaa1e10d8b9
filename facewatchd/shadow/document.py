"""AWS IoT Device Shadow semantics, pure: no I/O; callers pass `now` (epoch seconds).

One `ShadowDocument` is one shadow (classic or named). `update` applies a request document the way the
AWS Device Shadow service does and returns the payloads AWS would publish on /update/accepted,
/update/delta and /update/documents:

- objects merge key by key, recursively; any other value (scalars, arrays) replaces the old one whole;
- a `null` value deletes its key; objects left empty disappear; `"desired": null` removes the section;
- the delta is every desired key missing from reported or different from it, recursing into objects
  and comparing arrays whole; it is published after every accepted update while it is not empty (all
  differing attributes, whether or not this update touched them);
- `{"state": null}` clears both sections; request fields other than state, version and clientToken are
  ignored;
- `version` in a request must equal the current version (409); the desired and reported data (compact
  JSON, without the wrapper) are capped at 8 KB (413); malformed requests get a 400 naming what is wrong.

Metadata mirrors the state tree with `{"timestamp": N}` at each leaf (and per array element).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

MAX_STATE_BYTES = 8 * 1024
MAX_DEPTH = 6
MAX_CLIENT_TOKEN_BYTES = 64
SECTIONS = ("desired", "reported")

Json = Any
Obj = dict[str, Any]


class ShadowError(Exception):
    """A request the shadow service rejects; `to_rejected` is the AWS /rejected payload."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_rejected(self, client_token: str | None = None, now: int | None = None) -> Obj:
        body: Obj = {"code": self.code, "message": self.message,
                     "timestamp": int(time.time()) if now is None else now}
        if client_token is not None:
            body["clientToken"] = client_token
        return body


@dataclass(frozen=True, slots=True)
class UpdateResult:
    accepted: Obj  # /update/accepted
    delta: Obj | None  # /update/delta, None when desired and reported agree
    documents: Obj  # /update/documents


def client_token_of(request: Json) -> str | None:
    """The request's clientToken if it is a valid one, so that even a rejection can echo it."""
    if isinstance(request, dict):
        token = request.get("clientToken")
        if isinstance(token, str) and len(token.encode()) <= MAX_CLIENT_TOKEN_BYTES:
            return token
    return None


def validate_client_token(request: Obj) -> str | None:
    if "clientToken" not in request:
        return None
    token = client_token_of(request)
    if token is None:
        raise ShadowError(400, f"Invalid clientToken: must be a string of at most {MAX_CLIENT_TOKEN_BYTES} bytes")
    return token


class ShadowDocument:
    """The stored shadow: state sections, their metadata, version and last-update timestamp."""

    def __init__(self) -> None:
        self._state: dict[str, Obj] = {}  # "desired"/"reported" -> object; absent when empty
        self._meta: dict[str, Obj] = {}
        self.version = 0
        self.timestamp = 0
        self.exists = False

    @classmethod
    def new(cls, base_version: int = 0) -> "ShadowDocument":
        """A shadow that does not exist yet; its first update gets version base_version + 1.

        AWS continues the version of a recently deleted shadow with the same name.
        """
        doc = cls()
        doc.version = base_version
        return doc

    # -- reading ---------------------------------------------------------------------------------

    @property
    def desired(self) -> Obj:
        return copy.deepcopy(self._state.get("desired", {}))

    @property
    def reported(self) -> Obj:
        return copy.deepcopy(self._state.get("reported", {}))

    @property
    def metadata(self) -> Obj:
        return copy.deepcopy(self._meta)

    def delta_state(self) -> Obj:
        return _delta(self._state.get("desired", {}), self._state.get("reported", {}), {})[0]

    def get_response(self, client_token: str | None = None, now: int | None = None) -> Obj:
        """The /get/accepted payload."""
        state: Obj = copy.deepcopy(self._state)
        delta = self.delta_state()
        if delta:
            state["delta"] = delta
        body: Obj = {"state": state, "metadata": copy.deepcopy(self._meta), "version": self.version,
                     "timestamp": self.timestamp if now is None else now}
        if client_token is not None:
            body["clientToken"] = client_token
        return body

    def _snapshot(self) -> Obj:
        return {"state": copy.deepcopy(self._state), "metadata": copy.deepcopy(self._meta), "version": self.version}

    # -- writing ---------------------------------------------------------------------------------

    def update(self, request: Json, now: int) -> UpdateResult:
        """Apply an /update request; raises ShadowError (and changes nothing) when AWS would reject it."""
        patch = _validate_update(request)
        token = validate_client_token(request)
        if "version" in request and request["version"] != self.version:
            raise ShadowError(409, "Version conflict")
        state, meta = copy.deepcopy(self._state), copy.deepcopy(self._meta)
        for section, section_patch in patch.items():
            if section_patch is None:
                state.pop(section, None)
                meta.pop(section, None)
                continue
            current, current_meta = state.get(section, {}), meta.get(section, {})
            _merge(current, current_meta, section_patch, now)
            if current:
                state[section], meta[section] = current, current_meta
            else:
                state.pop(section, None)
                meta.pop(section, None)
        size = sum(len(_compact(section)) for section in state.values())
        if size > MAX_STATE_BYTES:
            raise ShadowError(413, f"Payload too large: state is {size} bytes, the limit is {MAX_STATE_BYTES}")

        previous = self._snapshot() if self.exists else None
        self._state, self._meta = state, meta
        self.version += 1
        self.timestamp = now
        self.exists = True

        accepted: Obj = {"state": copy.deepcopy(patch),
                         "metadata": {section: _meta_of(value, now) for section, value in patch.items()},
                         "version": self.version, "timestamp": now}
        delta_state, delta_meta = _delta(state.get("desired", {}), state.get("reported", {}), meta.get("desired", {}))
        delta: Obj | None = None
        if delta_state:
            delta = {"state": delta_state, "metadata": delta_meta, "version": self.version, "timestamp": now}
        documents: Obj = {"previous": previous, "current": self._snapshot(), "timestamp": now}
        if token is not None:
            for body in (accepted, delta, documents):
                if body is not None:
                    body["clientToken"] = token
        return UpdateResult(accepted, delta, documents)

    # -- persistence -----------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"state": self._state, "metadata": self._meta, "version": self.version,
                           "timestamp": self.timestamp}, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ShadowDocument":
        body = json.loads(text)
        doc = cls()
        doc._state = {k: v for k, v in body["state"].items() if k in SECTIONS}
        doc._meta = {k: v for k, v in body["metadata"].items() if k in SECTIONS}
        doc.version = int(body["version"])
        doc.timestamp = int(body["timestamp"])
        doc.exists = True
        return doc


# -- helpers ------------------------------------------------------------------------------------


def _compact(value: Json) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _validate_update(request: Json) -> dict[str, Obj | None]:
    """Check the request's shape; returns its `state` (sections mapped to objects or None)."""
    if not isinstance(request, dict):
        raise ShadowError(400, "Invalid JSON: the request must be a JSON object")
    if "state" not in request:
        raise ShadowError(400, "Missing required node: state")
    state = request["state"]  # other top-level fields are ignored, as AWS does
    if state is None:  # "state": null clears the whole state
        return {section: None for section in SECTIONS}
    if not isinstance(state, dict):
        raise ShadowError(400, "State node must be an object")
    for key, value in state.items():
        if key not in SECTIONS:
            raise ShadowError(400, f"State contains an invalid node: '{key}' (only desired and reported)")
        if value is not None and not isinstance(value, dict):
            raise ShadowError(400, f"{key.capitalize()} node must be an object or null")
        if value is not None:
            depth = _depth(value)
            if depth > MAX_DEPTH:
                raise ShadowError(400, f"JSON contains too many levels of nesting in {key}: {depth}, "
                                       f"maximum is {MAX_DEPTH}")
            _check_arrays(value, key)
    version = request.get("version")
    if "version" in request and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise ShadowError(400, f"Invalid version: {version!r}, must be a non-negative integer")
    return state


def _depth(value: Json) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_arrays(value: Json, path: str) -> None:
    """AWS rejects null inside arrays (null means delete, which has no meaning for an element)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_arrays(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if v is None:
                raise ShadowError(400, f"Arrays cannot contain null values ({path}[{i}])")
            _check_arrays(v, f"{path}[{i}]")


def _meta_of(value: Json, now: int) -> Json:
    if isinstance(value, dict):
        return {k: _meta_of(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_meta_of(v, now) for v in value]
    return {"timestamp": now}


def _merge(state: Obj, meta: Obj, patch: Obj, now: int) -> None:
    """Merge `patch` into `state` (and `meta`) in place: objects recurse, null deletes, the rest replaces."""
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            child, child_meta = state.get(key), meta.get(key)
            if not isinstance(child, dict) or not isinstance(child_meta, dict):
                child, child_meta = {}, {}
            _merge(child, child_meta, value, now)
            if child:
                state[key], meta[key] = child, child_meta
            else:
                state.pop(key, None)
                meta.pop(key, None)
        else:
            state[key] = copy.deepcopy(value)
            meta[key] = _meta_of(value, now)


def _delta(desired: Obj, reported: Obj, desired_meta: Obj) -> tuple[Obj, Obj]:
    """Desired keys missing from reported or different; objects recurse, arrays compare whole."""
    delta: Obj = {}
    meta: Obj = {}
    for key, want in desired.items():
        have = reported.get(key)
        if isinstance(want, dict) and isinstance(have, dict):
            sub, sub_meta = _delta(want, have, desired_meta.get(key) or {})
            if sub:
                delta[key], meta[key] = sub, sub_meta
        elif key not in reported or not _same(want, have):
            delta[key] = copy.deepcopy(want)
            meta[key] = copy.deepcopy(desired_meta.get(key, {}))
    return delta, meta


def _same(a: Json, b: Json) -> bool:
    """JSON equality: unlike Python's ==, true is not 1 (but 1 is 1.0, as numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
