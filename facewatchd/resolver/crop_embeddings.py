"""A request's embedding, from its crop: a device's embedding is never trusted (the core drops it), so the face
is found and embedded in the crop, in a worker thread, once. Kept by the crop itself (an id is only what a
device says) for the few requests between a search and its index, so a request costs one embedding."""

from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np

from facewatchd.messages import FaceQuery
from facewatchd.resolver.ports import NoFaceError

EMBEDDED_KEPT = 8  # crop embeddings kept between a request's search and its index


class CropEmbeddings:
    def __init__(self, embed_crop: Callable[[bytes], np.ndarray | None]) -> None:
        self._embed_crop = embed_crop
        self._embedded: dict[bytes, np.ndarray] = {}  # crop → its embedding, the latest few

    async def of(self, query: FaceQuery) -> np.ndarray:
        """The query's embedding: an enrolment's own, or its crop's (NoFaceError where the crop has no face)."""
        if query.embedding is not None:
            return query.embedding
        emb = self._embedded.get(query.crop_jpeg)
        if emb is None:
            emb = await asyncio.to_thread(self._embed_crop, query.crop_jpeg)
            if emb is None:
                raise NoFaceError(f"no face found in the crop of {query.face_id}")
            self._embedded[query.crop_jpeg] = emb
            while len(self._embedded) > EMBEDDED_KEPT:
                self._embedded.pop(next(iter(self._embedded)))
        return emb
