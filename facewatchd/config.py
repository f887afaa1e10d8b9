"""TOML config → typed, validated config.

Every section's schema lives beside the code that uses it (detector, embedder, cache, links, plugins);
this module only assembles them. Unknown keys are errors, and every error names the file, the key path
and what is wrong: `etc/facewatchd.toml: cameras[0].fps: must be > 0, got -1`.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from facewatchd.identity import IdentityConfig
from facewatchd.link.local import LocalLinkConfig
from facewatchd.pipeline.cache import CacheConfig
from facewatchd.pipeline.camera import CameraConfig
from facewatchd.pipeline.motion import MotionConfig
from facewatchd.pipeline.tracker import TrackerConfig
from facewatchd.pipeline.uplink import UplinkConfig
from facewatchd.resolver.aws import AwsResolverConfig  # imports without the aws extra installed
from facewatchd.resolver.local import LocalResolverConfig
from facewatchd.vision.detector import DetectorConfig
from facewatchd.vision.embedder import EmbedderConfig
from facewatchd.vision.liveness import LivenessConfig
from facewatchd.vision.quality import QualityConfig
from facewatchd.web import WebConfig

DEFAULT_CONFIG = Path("etc/facewatchd.toml")


class ConfigError(ValueError):
    """A config that cannot be used; str() is the full, printable explanation."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(Strict):
    thing: str = Field("facewatchd-demo", pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
                       description="the device's thing name (AWS IoT thing / shadow name)")
    state_dir: Path = Field(Path(".state"), description="cache, outbox and local resolver data")
    workers: int = Field(2, ge=1, le=64, description="threads for face detection (SFace embeds on a thread of its own)")
    drain_timeout_s: float = Field(10.0, ge=0, description="how long a finished run waits for pending answers")


class LoggingConfig(Strict):
    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


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
    Union[Annotated[LocalResolverConfig, Tag("local")], Annotated[AwsResolverConfig, Tag("aws")]],
    Discriminator(_resolver_kind),
]


def _server_type() -> Any:
    """The on-prem resolver service's `[server]` table; it needs the mqtt extra (without it, no such table)."""
    try:
        from facewatchd.resolver.service import ResolverServiceConfig
    except ImportError:
        return None
    return ResolverServiceConfig


ServerConfig = _server_type()


class Config(Strict):
    device: DeviceConfig = DeviceConfig()
    logging: LoggingConfig = LoggingConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    motion: MotionConfig = MotionConfig()
    detector: DetectorConfig = DetectorConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    tracker: TrackerConfig = TrackerConfig()
    identity: IdentityConfig = IdentityConfig()
    quality: QualityConfig = QualityConfig()
    liveness: LivenessConfig = LivenessConfig()
    cache: CacheConfig = CacheConfig()
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
    def _unique_camera_ids(self) -> "Config":
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique, repeated: {', '.join(dupes)}")
        return self


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "string_pattern_mismatch": "must match {pattern}",
    "union_tag_invalid": "must be one of {expected_tags}, got {tag!r}",
    "union_tag_not_found": "required key is missing",
}
# Every union of config kinds (link, resolver) is chosen by its `type` key: errors about the choice name it.
_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}


def key_path(loc: tuple[int | str, ...]) -> str:
    """('cameras', 0, 'fps') → 'cameras[0].fps'; union branch names (the `type` tags) are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out and part in {"local", "mqtt", "awsiot", "greengrass", "aws"} and not out.endswith("type"):
            continue  # pydantic names the union branch; the user wrote no such key
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        template = _MESSAGES.get(e["type"])
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in e.get("ctx", {}).items()}
        msg = template.format(**ctx) if template else e["msg"]
        shown = "input" in e and not isinstance(e["input"], (dict, BaseModel))  # a table is no use in one line
        if e["type"] not in {"extra_forbidden", "missing"} and shown:
            msg += f", got {e['input']!r}"
        path = key_path(tuple(e["loc"]) + (("type",) if e["type"] in _TAG_ERRORS else ()))
        lines.append(f"{prefix}{path}: {msg}" if path != "(top level)" or not prefix else f"{prefix[:-1]}: {msg}")
    return lines


def _not_finite(value: Any, path: tuple[int | str, ...] = ()) -> list[str]:
    """Key paths of inf and nan values (TOML has both): no setting of ours means them, and a range check
    lets inf through (`fps = inf` is > 0)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key_path(path)}: must be a finite number, got {value}"]
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _not_finite(item, path + (key,))]
    if isinstance(value, list):
        return [line for i, item in enumerate(value) for line in _not_finite(item, path + (i,))]
    return []


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    where = f"{source}: " if source else ""
    if infinite := _not_finite(data):
        raise ConfigError("\n".join(where + line for line in infinite))
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError("\n".join(where + line for line in format_errors(e))) from None
    config.source = source
    return config


def load_config(path: Path | str | None = None) -> Config:
    p = Path(path) if path else DEFAULT_CONFIG
    return parse_config(read_config_data(p), p)


def read_config_data(p: Path) -> dict[str, Any]:
    """A config file's TOML, with a clear error for a file that cannot be read or is not TOML."""
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: nested too deeply") from None
