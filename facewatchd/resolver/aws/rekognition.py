"""The face collection over Rekognition: search, index, move and delete faces, each labelled by its person id."""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable

from facewatchd.messages import FaceQuery
from facewatchd.resolver.aws.config import AwsResolverConfig
from facewatchd.resolver.aws.retry import ClientError, error_code
from facewatchd.resolver.ports import Match, NoFaceError

# SearchFacesByImage's MaxFaces when some persons are excluded, and the service's ceiling.
EXCLUDING_MAX_FACES = 10
REKOGNITION_MAX_FACES = 4096
# Rekognition errors that mean "this crop can never be searched": a poison message, not an outage.
_IMAGE_ERRORS = {"InvalidImageFormatException", "ImageTooLargeException"}
# Rekognition's answers when the account's TPS is exceeded (botocore retries both).
THROTTLE_ERRORS = frozenset({"ThrottlingException", "ProvisionedThroughputExceededException"})


class UnreadableImageError(NoFaceError):
    """Rekognition cannot read the crop at all (corrupt or oversized image): poison, like no face."""


class RekognitionCollection:
    """The face collection. ExternalImageId carries the person id, so a match names the person."""

    def __init__(self, rekognition: Any, config: AwsResolverConfig,
                 read_crop: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self._rek = rekognition
        self._read_crop = read_crop  # for a moved face: Rekognition cannot relabel, so it is indexed again
        self._id = config.collection_id
        self._quality = config.quality_filter
        self._max_faces = config.max_faces

    async def ensure_collection(self) -> None:
        try:
            await self._rek.create_collection(CollectionId=self._id)
        except ClientError as e:
            if error_code(e) != "ResourceAlreadyExistsException":  # another cold start won the race: fine
                raise

    @staticmethod
    def _poison(e: ClientError, query: FaceQuery) -> None:
        code, message = error_code(e), str(e.response.get("Error", {}).get("Message", ""))
        if code in _IMAGE_ERRORS:
            raise UnreadableImageError(f"{code}: {message} (face {query.face_id})") from None
        if code == "InvalidParameterException":
            # Every other parameter is ours and valid: the image is what Rekognition cannot use (no face in
            # it, smaller than 80x80 px). A poison, whatever the message's wording: never retried.
            raise NoFaceError(f"{code}: {message} (face {query.face_id})") from None

    async def search(self, query: FaceQuery, threshold: float, exclude: frozenset[str] = frozenset()) -> Match | None:
        """The best match whose person is not in `exclude`: the persons seen in the same frame. The
        core maps query.other_faces to their persons; the collection's FaceIds are Rekognition's, never
        our face ids, so excluding by person is what keeps two people in one frame apart."""
        if not exclude:
            return self._best(await self._matches(query, threshold, self._max_faces), exclude)
        # Excluded persons may fill the first matches: ask for more, and once for all if they did.
        max_faces = max(self._max_faces, EXCLUDING_MAX_FACES)
        matches = await self._matches(query, threshold, max_faces)
        best = self._best(matches, exclude)
        page_was_full = len(matches) >= max_faces
        if best is None and page_was_full and max_faces < REKOGNITION_MAX_FACES:
            best = self._best(await self._matches(query, threshold, REKOGNITION_MAX_FACES), exclude)
        return best

    async def _matches(self, query: FaceQuery, threshold: float, max_faces: int) -> list[dict[str, Any]]:
        try:
            resp = await self._rek.search_faces_by_image(
                CollectionId=self._id, Image={"Bytes": query.crop_jpeg}, MaxFaces=max_faces,
                FaceMatchThreshold=min(100.0, max(0.0, threshold * 100)), QualityFilter=self._quality)
        except ClientError as e:
            self._poison(e, query)
            raise
        return list(resp.get("FaceMatches", []))

    @staticmethod
    def _best(matches: list[dict[str, Any]], exclude: frozenset[str]) -> Match | None:
        # Faces indexed by something other than us carry no person id: skip them.
        allowed = [m for m in matches
                   if m.get("Face", {}).get("ExternalImageId") and m["Face"]["ExternalImageId"] not in exclude]
        if not allowed:
            return None
        best = max(allowed, key=lambda m: m["Similarity"])
        return Match(best["Face"]["ExternalImageId"], float(best["Similarity"]) / 100, best["Face"]["FaceId"])

    async def delete_faces(self, face_refs: list[str]) -> None:
        for i in range(0, len(face_refs), 4096):
            await self._rek.delete_faces(CollectionId=self._id, FaceIds=face_refs[i:i + 4096])

    async def reassign(self, face_ref: str, person_id: str, crop_key: str) -> str:
        """ExternalImageId cannot be changed: index the stored crop again under the new person, then drop
        the old face (in that order: a failure in between leaves a duplicate, never a lost face)."""
        if self._read_crop is None:
            raise RuntimeError("moving a face needs the crop store")
        jpeg = await self._read_crop(crop_key)
        ref = await self.index(FaceQuery(str(uuid.uuid4()), "", "move", "move", jpeg), person_id)
        await self.delete_faces([face_ref])
        return ref

    async def count_templates(self) -> int:
        """Not needed here: on Rekognition's scale the naming threshold is fixed (see aws_identity)."""
        return 0

    async def index(self, query: FaceQuery, person_id: str) -> str:
        try:
            resp = await self._rek.index_faces(
                CollectionId=self._id, Image={"Bytes": query.crop_jpeg}, ExternalImageId=person_id, MaxFaces=1,
                QualityFilter=self._quality, DetectionAttributes=["DEFAULT"])
        except ClientError as e:
            self._poison(e, query)
            raise
        records = resp.get("FaceRecords", [])
        if not records:
            reasons = [r for u in resp.get("UnindexedFaces", []) for r in u.get("Reasons", [])]
            raise NoFaceError(f"IndexFaces indexed no face of {query.face_id} ({', '.join(reasons) or 'no face'})")
        return str(records[0]["Face"]["FaceId"])

    async def faces_by_person(self) -> dict[str, list[str]]:
        """Every face of the collection by its person id (faces indexed without one are not ours: left out)."""
        faces: dict[str, list[str]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"CollectionId": self._id, "MaxResults": 4096}
            if token:
                kwargs["NextToken"] = token
            resp = await self._rek.list_faces(**kwargs)
            for face in resp.get("Faces", []):
                if face.get("ExternalImageId"):
                    faces.setdefault(face["ExternalImageId"], []).append(face["FaceId"])
            token = resp.get("NextToken")
            if not token:
                return faces

    async def delete_person(self, person_id: str) -> int:
        # ListFaces over the collection, not the face refs we recorded: it also finds faces indexed
        # by an attempt whose DynamoDB write then failed.
        face_ids = (await self.faces_by_person()).get(person_id, [])
        deleted = 0
        for i in range(0, len(face_ids), 4096):
            resp = await self._rek.delete_faces(CollectionId=self._id, FaceIds=face_ids[i:i + 4096])
            deleted += len(resp.get("DeletedFaces", []))
        return deleted
