"""The embedded default: the resolver core over the local adapters, answering through an in-process
shadow. Used by the daemon (no broker, no cloud) and by the `facewatchd faces` commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from facewatchd.identity import IdentityConfig
from facewatchd.link.local import HubShadowPort, LocalLink, ShadowHub
from facewatchd.resolver.core import Resolver
from facewatchd.messages import FaceQuery
from facewatchd.resolver.local import LocalResolverConfig, LocalResolverStores
from facewatchd.resolver.ports import NoFaceError
from facewatchd.shadow.store import ShadowStore
from facewatchd.vision.analyzer import FaceAnalyzer
from facewatchd.vision.detector import DetectorConfig
from facewatchd.vision.embedder import EmbedderConfig, SFaceEmbedder


class EmbeddedResolver:
    def __init__(self, state_dir: Path, config: LocalResolverConfig, detector: DetectorConfig | None = None,
                 embedder: EmbedderConfig | None = None, identity: IdentityConfig | None = None,
                 shadow_path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._detector_config = detector
        self._embedder_config = embedder
        self._analyzer: FaceAnalyzer | None = None  # loaded on the first request or enrolment
        self._embedder: SFaceEmbedder | None = None  # the device's own network, where it shares it
        self.stores = LocalResolverStores(config.data_dir or state_dir / "resolver", self.embed_crop, clock)
        self.shadow_store = ShadowStore(shadow_path or state_dir / "shadow.db")
        self.hub = ShadowHub(self.shadow_store)
        self.resolver = Resolver(self.stores.crops, self.stores.collection, self.stores.names, HubShadowPort(self.hub),
                                 identity or IdentityConfig(), config.templates_per_person, clock)

    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer(self._detector_config, self._embedder_config, self._embedder)
        return self._analyzer

    def share_embedder(self, embedder: object) -> None:
        """Embed crops with the device's own SFace network (in the same process, with the same [embedder]
        config) rather than load a second copy of it, about 80 MB. Another backend's is not shared: the
        resolver's embeddings stay OpenCV's."""
        if type(embedder) is SFaceEmbedder and self._analyzer is None:
            self._embedder = embedder

    def embed_crop(self, jpeg: bytes) -> np.ndarray | None:
        return self.analyzer.embed_crop(jpeg)

    def link(self, thing: str) -> LocalLink:
        return LocalLink(thing, self.hub, self._resolve)

    async def _resolve(self, query: FaceQuery) -> None:
        """As the on-prem service does: a crop with no face the resolver can find is refused, so the device
        stops asking (it is not retried for ever)."""
        try:
            await self.resolver.resolve(query)
        except NoFaceError as e:
            await self.resolver.refuse(query.thing, query.face_id, f"no_face: {e}")

    def close(self) -> None:
        self.stores.close()
        close = getattr(self.shadow_store, "close", None)
        if close:
            close()
