"""A Rekognition-compatible test server: the real JSON 1.1 protocol on a free loopback port, with
real face matching (YuNet + SFace), so the AWS adapters are tested with the real aioboto3 client.

Protocol: POST /, `X-Amz-Target: RekognitionService.<Op>`, `Content-Type: application/x-amz-json-1.1`;
errors are HTTP 400 with `{"__type": <code>, "Message": ...}` as the service sends them. Requests are
checked against botocore's own model of the operation (unknown or missing members are refused).

Similarity. Rekognition reports 0-100; SFace gives a cosine in [-1, 1] whose same-person threshold is
0.363. The mapping is piecewise linear and monotone, so Rekognition's default threshold of 80 means
SFace's threshold:

    cosine in [0.363, 1]   ->  80 + 20 * (c - 0.363) / (1 - 0.363)     (0.363 -> 80, 1 -> 100)
    cosine in [-1, 0.363]  ->  80 * (c + 1) / (1 + 0.363)              (-1 -> 0)

Quality filter: NONE keeps every detected face; LOW and AUTO drop faces under 20 px or with a
detector score under 0.7 (SMALL_BOUNDING_BOX, LOW_CONFIDENCE); MEDIUM and HIGH ask 0.8 and 0.9. An
approximation of the service's filter, documented as such.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import botocore.session
import numpy as np
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from facewatchd.vision.analyzer import AnalysedFace, FaceAnalyzer, ImageError, decode_image
from facewatchd.vision.embedder import SFACE_COSINE_THRESHOLD

TARGET_PREFIX = "RekognitionService."
FACE_MODEL_VERSION = "7.0"
MIN_IMAGE_SIDE = 80
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_COLLECTION_ID = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
_EXTERNAL_ID = re.compile(r"^[a-zA-Z0-9_.\-:]{1,255}$")
_MIN_SCORE = {"NONE": 0.0, "AUTO": 0.7, "LOW": 0.7, "MEDIUM": 0.8, "HIGH": 0.9}
_MIN_SIDE_PX = 20


def similarity_from_cosine(c: float, t: float = SFACE_COSINE_THRESHOLD) -> float:
    c = max(-1.0, min(1.0, c))
    return 80 + 20 * (c - t) / (1 - t) if c >= t else 80 * (c + 1) / (1 + t)


def cosine_from_similarity(s: float, t: float = SFACE_COSINE_THRESHOLD) -> float:
    return t + (s - 80) * (1 - t) / 20 if s >= 80 else s * (1 + t) / 80 - 1


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # no access log on the test output
        pass


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class StoredFace:
    face_id: str
    image_id: str
    external_image_id: str | None
    bounding_box: dict[str, float]
    confidence: float
    embedding: np.ndarray

    def as_face(self) -> dict[str, Any]:
        face = {"FaceId": self.face_id, "BoundingBox": self.bounding_box, "ImageId": self.image_id,
                "Confidence": self.confidence, "IndexFacesModelVersion": FACE_MODEL_VERSION}
        if self.external_image_id:
            face["ExternalImageId"] = self.external_image_id
        return face


@dataclass
class Collection:
    arn: str
    created: float
    faces: dict[str, StoredFace] = field(default_factory=dict)  # insertion-ordered, as ListFaces pages them


@dataclass
class _Fault:
    code: str
    status: int
    remaining: int


class RekognitionServer:
    """Start with `with RekognitionServer() as rek:`; point clients at `rek.url`.

    `calls` counts every request per operation; `inject(op, code)` makes the next call(s) of an
    operation fail with that error (e.g. ThrottlingException) to exercise retries."""

    def __init__(self, region: str = "us-east-1", account: str = "123456789012",
                 analyzer: FaceAnalyzer | None = None) -> None:
        self.region, self.account = region, account
        self._analyzer = analyzer or FaceAnalyzer()
        self._model = botocore.session.get_session().get_service_model("rekognition")
        self._lock = threading.Lock()
        self.collections: dict[str, Collection] = {}
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._pending: dict[str, _Fault] = {}
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateCollection": self._create_collection, "DescribeCollection": self._describe_collection,
            "DeleteCollection": self._delete_collection, "IndexFaces": self._index_faces,
            "SearchFacesByImage": self._search_faces_by_image, "ListFaces": self._list_faces,
            "DeleteFaces": self._delete_faces,
        }

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "RekognitionServer":
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="rekognition-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> "RekognitionServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def inject(self, operation: str, code: str, times: int = 1, status: int = 400) -> None:
        with self._lock:
            self._pending[operation] = _Fault(code, status, times)

    def faces_of(self, collection_id: str, external_image_id: str) -> list[str]:
        with self._lock:
            coll = self.collections.get(collection_id)
            faces = coll.faces.values() if coll else []
            return [f.face_id for f in faces if f.external_image_id == external_image_id]

    # -- protocol ---------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        request_id = str(uuid.uuid4())
        try:
            op = self._operation(request)
            with self._lock:
                self.calls[op] += 1
                fault = self._pending.get(op)
                if fault and fault.remaining > 0:
                    fault.remaining -= 1
                    self.faults[op] += 1
                    raise ApiError(fault.code, f"injected {fault.code}", fault.status)
            try:
                params = json.loads(request.get_data() or b"{}")
            except ValueError:
                raise ApiError("SerializationException", "Request body is not valid JSON") from None
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "Request body must be a JSON object")
            self._validate(op, params)
            body, status = self._ops[op](params), 200
        except ApiError as e:
            body = {"__type": e.code, "Code": e.code, "Logref": request_id, "Message": e.message}
            status = e.status
        response = Response(json.dumps(body), status=status, content_type="application/x-amz-json-1.1",
                            headers={"x-amzn-RequestId": request_id})
        return response(environ, start_response)

    def _operation(self, request: Request) -> str:
        target = request.headers.get("X-Amz-Target", "")
        if request.method != "POST" or request.path != "/" or not target.startswith(TARGET_PREFIX):
            raise ApiError("UnknownOperationException", f"not a Rekognition request: {request.method} {request.path}")
        if "x-amz-json-1.1" not in request.headers.get("Content-Type", ""):
            raise ApiError("SerializationException", "Content-Type must be application/x-amz-json-1.1")
        op = target[len(TARGET_PREFIX):]
        if op not in self._ops:
            raise ApiError("UnknownOperationException", f"operation {op} is not supported by this server")
        return op

    def _validate(self, op: str, params: dict[str, Any]) -> None:
        shape = self._model.operation_model(op).input_shape
        unknown = set(params) - set(shape.members)
        missing = set(shape.required_members) - set(params)
        if unknown or missing:
            raise ApiError("InvalidParameterException",
                           f"Request has invalid parameters: unknown {sorted(unknown)}, missing {sorted(missing)}")
        if not _COLLECTION_ID.match(str(params.get("CollectionId", ""))):
            raise ApiError("InvalidParameterException", "CollectionId: must match [a-zA-Z0-9_.\\-]+")

    def _collection(self, collection_id: str) -> Collection:
        coll = self.collections.get(collection_id)
        if coll is None:
            raise ApiError("ResourceNotFoundException", f"The collection id: {collection_id} does not exist")
        return coll

    # -- images -----------------------------------------------------------------------------------
    @staticmethod
    def _image_bytes(params: dict[str, Any]) -> bytes:
        image = params.get("Image")
        if not isinstance(image, dict) or "Bytes" not in image:
            if isinstance(image, dict) and "S3Object" in image:
                raise ApiError("InvalidS3ObjectException", "S3 images are not supported by this test server")
            raise ApiError("InvalidParameterException", "Image: Bytes is required")
        try:
            data = base64.b64decode(image["Bytes"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ApiError("SerializationException", "Image.Bytes is not base64") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ApiError("ImageTooLargeException", "Image size is too large.")
        if not (data.startswith(b"\xff\xd8") or data.startswith(b"\x89PNG")):
            raise ApiError("InvalidImageFormatException", "Request has invalid image format")
        return data

    def _analyse(self, data: bytes) -> tuple[np.ndarray, list[AnalysedFace]]:
        try:
            image = decode_image(data)
        except ImageError:
            raise ApiError("InvalidImageFormatException", "Request has invalid image format") from None
        if min(image.shape[:2]) < MIN_IMAGE_SIDE:  # as Rekognition: images under 80x80 px are refused
            raise ApiError("InvalidParameterException", "Requested image should have at least 80 pixels in "
                           "each dimension")
        return image, self._analyzer.faces(image)  # largest first

    @staticmethod
    def _rejections(face: AnalysedFace, quality: str) -> list[str]:
        reasons = []
        if quality != "NONE" and min(face.face.box[2:]) < _MIN_SIDE_PX:
            reasons.append("SMALL_BOUNDING_BOX")
        if face.face.score < _MIN_SCORE[quality]:
            reasons.append("LOW_CONFIDENCE")
        return reasons

    @staticmethod
    def _box(face: AnalysedFace, image: np.ndarray) -> dict[str, float]:
        h, w = image.shape[:2]
        x, y, bw, bh = face.face.box
        return {"Width": bw / w, "Height": bh / h, "Left": x / w, "Top": y / h}

    def _detail(self, face: AnalysedFace, image: np.ndarray) -> dict[str, Any]:
        h, w = image.shape[:2]
        names = ["eyeRight", "eyeLeft", "nose", "mouthRight", "mouthLeft"]  # YuNet's landmark order
        marks = [{"Type": n, "X": float(p[0]) / w, "Y": float(p[1]) / h} for n, p in zip(names, face.face.landmarks)]
        (rx, ry), (lx, ly) = face.face.landmarks[0], face.face.landmarks[1]
        roll = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
        return {"BoundingBox": self._box(face, image), "Landmarks": marks,
                "Pose": {"Roll": roll, "Yaw": 0.0, "Pitch": 0.0},
                "Quality": {"Brightness": float(image.mean()) / 2.55, "Sharpness": 50.0},
                "Confidence": face.face.score * 100}

    # -- operations -------------------------------------------------------------------------------
    def _create_collection(self, p: dict[str, Any]) -> dict[str, Any]:
        cid = p["CollectionId"]
        arn = f"arn:aws:rekognition:{self.region}:{self.account}:collection/{cid}"
        with self._lock:
            if cid in self.collections:
                raise ApiError("ResourceAlreadyExistsException", f"The collection id: {cid} already exists")
            self.collections[cid] = Collection(arn, time.time())
        return {"StatusCode": 200, "CollectionArn": arn, "FaceModelVersion": FACE_MODEL_VERSION}

    def _describe_collection(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            coll = self._collection(p["CollectionId"])
            return {"FaceCount": len(coll.faces), "FaceModelVersion": FACE_MODEL_VERSION, "CollectionARN": coll.arn,
                    "CreationTimestamp": coll.created, "UserCount": 0}

    def _delete_collection(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._collection(p["CollectionId"])
            del self.collections[p["CollectionId"]]
        return {"StatusCode": 200}

    def _index_faces(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._collection(p["CollectionId"])
        external = p.get("ExternalImageId")
        if external is not None and not _EXTERNAL_ID.match(str(external)):
            raise ApiError("InvalidParameterException", "ExternalImageId: must match [a-zA-Z0-9_.\\-:]+")
        max_faces = p.get("MaxFaces", 100)
        if not isinstance(max_faces, int) or max_faces < 1:
            raise ApiError("InvalidParameterException", "MaxFaces: must be at least 1")
        quality = p.get("QualityFilter", "AUTO")
        if quality not in _MIN_SCORE:
            raise ApiError("InvalidParameterException", f"QualityFilter: {quality!r} is not valid")
        image, faces = self._analyse(self._image_bytes(p))
        image_id = str(uuid.uuid4())
        records, unindexed = [], []
        for face in faces:  # largest first, as the service keeps the largest when MaxFaces cuts
            detail = self._detail(face, image)
            reasons = self._rejections(face, quality)
            if not reasons and len(records) >= max_faces:
                reasons = ["EXCEEDS_MAX_FACES"]
            if reasons:
                unindexed.append({"Reasons": reasons, "FaceDetail": detail})
                continue
            stored = StoredFace(str(uuid.uuid4()), image_id, external, detail["BoundingBox"], detail["Confidence"],
                                face.embedding)
            records.append({"Face": stored.as_face(), "FaceDetail": detail})
            with self._lock:
                self._collection(p["CollectionId"]).faces[stored.face_id] = stored
        return {"FaceRecords": records, "FaceModelVersion": FACE_MODEL_VERSION, "UnindexedFaces": unindexed}

    def _search_faces_by_image(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._collection(p["CollectionId"])
        threshold = p.get("FaceMatchThreshold", 80.0)
        max_faces = p.get("MaxFaces", 4096)
        quality = p.get("QualityFilter", "NONE")
        if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 100:
            raise ApiError("InvalidParameterException", "FaceMatchThreshold: must be between 0 and 100")
        if not isinstance(max_faces, int) or not 1 <= max_faces <= 4096:
            raise ApiError("InvalidParameterException", "MaxFaces: must be between 1 and 4096")
        if quality not in _MIN_SCORE:
            raise ApiError("InvalidParameterException", f"QualityFilter: {quality!r} is not valid")
        image, faces = self._analyse(self._image_bytes(p))
        faces = [f for f in faces if not self._rejections(f, quality)]
        if not faces:
            raise ApiError("InvalidParameterException", "There are no faces in the image. Should be at least 1.")
        searched = faces[0]  # the service searches the largest face
        with self._lock:
            stored = list(self._collection(p["CollectionId"]).faces.values())
        scored = [(similarity_from_cosine(float(np.dot(s.embedding, searched.embedding))), s) for s in stored]
        matches = sorted((m for m in scored if m[0] >= threshold), key=lambda m: m[0], reverse=True)[:max_faces]
        return {"SearchedFaceBoundingBox": self._box(searched, image),
                "SearchedFaceConfidence": searched.face.score * 100,
                "FaceMatches": [{"Similarity": sim, "Face": s.as_face()} for sim, s in matches],
                "FaceModelVersion": FACE_MODEL_VERSION}

    def _list_faces(self, p: dict[str, Any]) -> dict[str, Any]:
        page = p.get("MaxResults", 1000)
        if not isinstance(page, int) or not 0 <= page <= 4096:
            raise ApiError("InvalidParameterException", "MaxResults: must be between 0 and 4096")
        try:
            start = int(p.get("NextToken") or 0)
        except ValueError:
            raise ApiError("InvalidPaginationTokenException", "Invalid pagination token") from None
        wanted = set(p.get("FaceIds") or [])
        with self._lock:
            faces = [f for f in self._collection(p["CollectionId"]).faces.values() if not wanted or f.face_id in wanted]
        chunk = faces[start:start + page]
        out: dict[str, Any] = {"Faces": [f.as_face() for f in chunk], "FaceModelVersion": FACE_MODEL_VERSION}
        if start + page < len(faces):
            out["NextToken"] = str(start + page)
        return out

    def _delete_faces(self, p: dict[str, Any]) -> dict[str, Any]:
        ids = p["FaceIds"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= 4096:
            raise ApiError("InvalidParameterException", "FaceIds: between 1 and 4096 ids")
        deleted, missing = [], []
        with self._lock:
            coll = self._collection(p["CollectionId"])
            for face_id in ids:
                (deleted if coll.faces.pop(face_id, None) else missing).append(face_id)
        return {"DeletedFaces": deleted,
                "UnsuccessfulFaceDeletions": [{"FaceId": f, "Reasons": ["FACE_NOT_FOUND"]} for f in missing]}
