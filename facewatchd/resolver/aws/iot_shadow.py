"""The shadow port over the IoT data plane: a device's answers written to its shadow's desired state."""

from __future__ import annotations

import json
from typing import Any

from facewatchd.resolver.aws.retry import ClientError, backoff, error_code


class ShadowConflictError(RuntimeError):
    """The shadow kept changing under us; the message is retried later."""


class IotShadow:
    """ShadowPort over the IoT data plane, with optimistic versioning."""

    def __init__(self, iot_data: Any, max_conflicts: int = 8) -> None:
        self._iot = iot_data
        self._max_conflicts = max_conflicts

    async def _version(self, thing: str) -> int | None:
        try:
            resp = await self._iot.get_thing_shadow(thingName=thing)
        except ClientError as e:
            if error_code(e) == "ResourceNotFoundException":
                return None  # no shadow yet: the first update creates it
            raise
        async with resp["payload"] as stream:
            return int(json.loads(await stream.read())["version"])

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        for attempt in range(self._max_conflicts):
            body: dict[str, Any] = {"state": {"desired": desired}}
            version = await self._version(thing)
            if version is not None:
                body["version"] = version
            try:
                await self._iot.update_thing_shadow(thingName=thing, payload=json.dumps(body).encode())
                return
            except ClientError as e:
                if error_code(e) != "ConflictException":
                    raise
            await backoff(attempt)
        raise ShadowConflictError(f"shadow of {thing}: version conflict {self._max_conflicts} times")
