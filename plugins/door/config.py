"""The [plugins.door] section: who may unlock, when, on what evidence, and the lock it drives."""

from __future__ import annotations

from datetime import datetime
from datetime import time as day_time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plugins.door.backends import GpioConfig, HttpConfig, MqttConfig
from plugins.door.liveness import DoorLivenessConfig

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Window(BaseModel):
    """Days and a local-time range; an end before the start runs past midnight into the next day."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(DAYS))
    start: day_time = Field(description="HH:MM, local time")
    end: day_time = Field(description="HH:MM, local time; before start: ends the next day")

    @model_validator(mode="after")
    def _not_empty(self) -> "Window":
        if self.start == self.end:
            raise ValueError("start and end are the same time: the window would be empty")
        return self

    def contains(self, now: datetime) -> bool:
        t, today, yesterday = now.time(), DAYS[now.weekday()], DAYS[(now.weekday() - 1) % 7]
        if self.start < self.end:
            return today in self.days and self.start <= t < self.end
        return (today in self.days and t >= self.start) or (yesterday in self.days and t < self.end)


class DoorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: GpioConfig | HttpConfig | MqttConfig = Field(discriminator="type")
    allow: list[str] = Field(default_factory=list, description="names that may unlock (case-insensitive)")
    unlock_threshold: float = Field(0.52, gt=0, le=1, description="similarity each agreeing embedding must reach "
                                    "(bench/openset.py, 1,000 enrolled: 0.1 % of strangers reach 0.52 in one photo)")
    min_agreeing_embeddings: int = Field(2, ge=1, le=16, description="the track's own embeddings, each at "
                                         "unlock_threshold or above, needed within evidence_window_s")
    evidence_window_s: float = Field(5.0, gt=0, le=600, description="how recent an agreeing embedding must be")
    cooldown_s: float = Field(30.0, ge=0, description="per person, between two unlocks")
    unlock_s: float = Field(5.0, gt=0, le=600, description="how long the door stays unlocked")
    schedule: list[Window] = Field(default_factory=list, description="when unlocking is allowed; empty: always")
    cameras: list[str] = Field(default_factory=list, description="cameras that watch this door; empty: all")
    audit_log: Path | None = Field(None, description="JSON lines; default <state_dir>/door-audit.jsonl")
    relock_backoff_max_s: float = Field(30.0, gt=0, le=600, description="longest wait between two attempts to "
                                        "lock a door whose lock did not answer (they never stop)")
    liveness: DoorLivenessConfig = Field(default_factory=DoorLivenessConfig)
