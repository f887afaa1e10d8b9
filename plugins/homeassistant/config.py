"""The `[plugins.homeassistant]` section: broker, topics, timings, options, and per camera its name and area."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from plugins._mqtt import BrokerConfig

TOPIC_PART = r"^[^#+\s]+$"


class CameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, description="the device's name in HA; default from the id")
    area: str | None = Field(None, min_length=1, description="HA's suggested_area; default: the camera's name")


class HomeAssistantConfig(BrokerConfig):
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PART, description="HA's discovery prefix")
    base_topic: str = Field("facewatchd", pattern=TOPIC_PART, description="state topics: <base>/<thing>/…")
    unknown_off_after_s: float = Field(30.0, ge=0, description="'unknown person present' turns off this long "
                                       "after the last unknown face's track ended")
    away_after_s: float = Field(300.0, ge=0, description="a person is not_home this long after last seen")
    publish_face_crops: bool = Field(False, description="image entity with the last face crop (privacy: opt-in)")
    person_entities: bool = Field(True, description="one device_tracker per named person")
    configuration_url: str | None = Field(None, description="the hub's link in HA; default: the review page, "
                                          "when [web] is enabled")
    cameras: dict[str, CameraOptions] = Field(default_factory=dict, description="camera id → name, area")
