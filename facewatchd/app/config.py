"""The whole config: every part's section under its key, gathered here at the top. Each section's schema
lives beside the code that uses it, and a link or a resolver kind is chosen by its `type` key (Frigate-style),
so `facewatchd.config` below imports no part and any part may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from facewatchd.config import DEFAULT_CONFIG, DeviceConfig, LoggingConfig, Strict, read_config_data, validate_config
from facewatchd.identity import IdentityConfig
from facewatchd.link.local import LocalLinkConfig
from facewatchd.pipeline.cache import CacheConfig
from facewatchd.pipeline.camera import CameraConfig
from facewatchd.pipeline.health import HealthConfig
from facewatchd.pipeline.motion import MotionConfig
from facewatchd.pipeline.regions import RegionConfig
from facewatchd.pipeline.tracker import TrackerConfig
from facewatchd.pipeline.uplink import UplinkConfig
from facewatchd.resolver.aws import AwsResolverConfig  # imports without the aws extra installed
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.resolver.postgres.config import PostgresResolverConfig  # imports without the postgres extra
from facewatchd.vision.detector import DetectorConfig
from facewatchd.vision.embedding import EmbedderConfig
from facewatchd.vision.liveness import LivenessConfig
from facewatchd.vision.quality import QualityConfig
from facewatchd.web.config import WebConfig


def _link_types() -> Any:
    """The link configs, chosen by their `type` key (Frigate-style); optional kinds only if installed."""
    kinds: list[type[BaseModel]] = [LocalLinkConfig]
    try:
        from facewatchd.link.mqtt import MqttLinkConfig
        kinds.append(MqttLinkConfig)
    except ImportError:
        pass
    try:
        from facewatchd.link.awsiot import AwsIotLinkConfig
        kinds.append(AwsIotLinkConfig)
    except ImportError:
        pass
    try:
        from facewatchd.link.greengrass import GreengrassLinkConfig
        kinds.append(GreengrassLinkConfig)
    except ImportError:
        pass
    return Annotated[Union[tuple(kinds)], Field(discriminator="type")] if len(kinds) > 1 else kinds[0]


LinkConfig = _link_types()


def _resolver_kind(value: Any) -> str:
    # A [resolver] table without `type` is the embedded default, as it was before there were kinds.
    return str(value.get("type", "local")) if isinstance(value, dict) else str(getattr(value, "type", "local"))


ResolverConfig = Annotated[
    Union[Annotated[LocalResolverConfig, Tag("local")], Annotated[AwsResolverConfig, Tag("aws")],
          Annotated[PostgresResolverConfig, Tag("postgresql")]],
    Discriminator(_resolver_kind),
]


def _server_type() -> Any:
    """The on-prem resolver service's `[server]` table; it needs the mqtt extra (without it, no such table)."""
    try:
        from facewatchd.resolver.mqtt_adapter import ResolverServiceConfig
    except ImportError:
        return None
    return ResolverServiceConfig


ServerConfig = _server_type()


class Config(Strict):
    device: DeviceConfig = DeviceConfig()
    logging: LoggingConfig = LoggingConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    motion: MotionConfig = MotionConfig()
    regions: RegionConfig = RegionConfig()
    detector: DetectorConfig = DetectorConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    tracker: TrackerConfig = TrackerConfig()
    identity: IdentityConfig = IdentityConfig()
    quality: QualityConfig = QualityConfig()
    liveness: LivenessConfig = LivenessConfig()
    cache: CacheConfig = CacheConfig()
    health: HealthConfig = HealthConfig()
    web: WebConfig = WebConfig()
    uplink: UplinkConfig = UplinkConfig()
    resolver: ResolverConfig = LocalResolverConfig()
    link: LinkConfig = Field(LocalLinkConfig(), validate_default=True)  # type: ignore[valid-type]
    server: Union[ServerConfig, None] = None  # type: ignore[valid-type]  # `facewatchd resolver` / `shadow`
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                               description="per-plugin sections, validated by each plugin")

    # Where the file was read from; relative paths in it are resolved against the working directory.
    source: Path | None = Field(None, exclude=True)

    @field_validator("link")
    @classmethod
    def _embedded_resolver_is_local(cls, link: Any, info: ValidationInfo) -> Any:
        # link "local" runs the resolver inside the daemon, so its cameras need the local resolver. An
        # operator's config (no cameras) may name the AWS resolver for `facewatchd faces`.
        resolver = info.data.get("resolver")
        if link.type == "local" and info.data.get("cameras") and resolver is not None and resolver.type != "local":
            raise PydanticCustomError(
                "embedded_resolver_not_local",
                'type "local" runs the resolver in the daemon, which needs resolver.type = "local", not "{kind}"; '
                'cameras of the AWS resolver reach it with link type "awsiot"', {"kind": resolver.type})
        return link

    @model_validator(mode="after")
    def _workers_share_a_store(self) -> "Config":
        if self.server is not None and self.server.share_group and self.resolver.type != "postgresql":
            raise ValueError(f'server.share_group: several workers need a shared store, resolver.type = "postgresql", '
                             f'not "{self.resolver.type}"')
        return self

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:  # named under `cameras`, where the mistake is, not at the top level
            raise PydanticCustomError("unique_ids", "each camera's id must be unique, repeated: {dupes}",
                                      {"dupes": ", ".join(dupes)})
        return cameras


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    config = validate_config(Config, data, source)
    config.source = source
    return config


def load_config(path: Path | str | None = None) -> Config:
    p = Path(path) if path else DEFAULT_CONFIG
    return parse_config(read_config_data(p), p)
