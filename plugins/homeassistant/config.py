"""The `[plugins.homeassistant]` section: broker, topics, timings, options, and per camera its name and area;
and the review page's address as HA, on another machine, reaches it."""

from __future__ import annotations

import ipaddress
import socket

from pydantic import BaseModel, ConfigDict, Field

from facewatchd.web.config import WebConfig
from plugins._mqtt import BrokerConfig

TOPIC_PART = r"^[^#+\s]+$"


class CameraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, description="the device's name in HA; default from the id")
    area: str | None = Field(None, min_length=1, description="HA's suggested_area; default: none (HA places a "
                             "device that has no area when one is configured later, never moves one that has)")


class HomeAssistantConfig(BrokerConfig):
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PART, description="HA's discovery prefix")
    base_topic: str = Field("facewatchd", pattern=TOPIC_PART, description="state topics: <base>/<thing>/…")
    unknown_off_after_s: float = Field(30.0, ge=0, description="'unknown person present' turns off this long "
                                       "after the last unknown face's track ended")
    away_after_s: float = Field(300.0, ge=0, description="a person is not_home this long after last seen")
    publish_face_crops: bool = Field(False, description="image entity with the last face crop (privacy: opt-in)")
    person_entities: bool = Field(True, description="one device_tracker per named person")
    configuration_url: str | None = Field(None, description="the hub's link in HA; default: the review page, "
                                          "when [web] is enabled and listens beyond loopback")
    cameras: dict[str, CameraOptions] = Field(default_factory=dict, description="camera id → name, area")


def review_page_url(web: WebConfig) -> str | None:
    """The review page as another machine reaches it: the first of `[web] hostnames`, else the address it
    listens on (this machine's name when that is every address); None on loopback or on a port not known
    before the start (0)."""
    listening = _ip(web.host.strip("[]"))
    if web.host == "localhost" or (listening is not None and listening.is_loopback) or web.port == 0:
        return None
    if web.hostnames:
        host = web.hostnames[0]
    elif listening is not None and listening.is_unspecified:  # 0.0.0.0, ::
        host = socket.gethostname()
    else:
        host = web.host.strip("[]")
    if (address := _ip(host)) is not None and address.version == 6:
        host = f"[{host}]"  # http://[fe80::1]:8750/
    return f"{'https' if web.tls_cert_file else 'http'}://{host}:{web.port}/"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None  # a name, not an address
