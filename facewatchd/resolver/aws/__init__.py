"""AWS adapters for the resolver ports, one module a service: crops in S3 (s3.py), the face collection in
Rekognition (rekognition.py), names in DynamoDB (dynamodb.py), answers through the IoT device shadow
(iot_shadow.py). aioboto3 end to end, so nothing blocks the loop; retry.py says what is retried.

This module opens the four over one session's clients. The SDK is imported only then, so importing the
package (app/config.py does, for AwsResolverConfig in config.py) needs no aws extra.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from facewatchd.resolver.aws.config import AwsResolverConfig, aws_identity
from facewatchd.resolver.aws.dynamodb import (DAY_S, ORPHANS, PROFILE, TABLE_ATTRIBUTES, TABLE_KEY_SCHEMA,
                                              TTL_ATTRIBUTE, DynamoNameDirectory)
from facewatchd.resolver.aws.iot_shadow import IotShadow, ShadowConflictError
from facewatchd.resolver.aws.rekognition import (EXCLUDING_MAX_FACES, REKOGNITION_MAX_FACES, THROTTLE_ERRORS,
                                                 RekognitionCollection, UnreadableImageError)
from facewatchd.resolver.aws.retry import ClientError
from facewatchd.resolver.aws.s3 import S3CropStore
from facewatchd.resolver.core import Resolver

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig

__all__ = ["DAY_S", "EXCLUDING_MAX_FACES", "ORPHANS", "PROFILE", "REKOGNITION_MAX_FACES", "TABLE_ATTRIBUTES",
           "TABLE_KEY_SCHEMA", "THROTTLE_ERRORS", "TTL_ATTRIBUTE", "AwsAdapters", "AwsResolverConfig", "ClientError",
           "DynamoNameDirectory", "IotShadow", "RekognitionCollection", "S3CropStore", "ShadowConflictError",
           "UnreadableImageError", "aws_identity", "client_config", "count_throttles", "open_aws_adapters"]


@dataclass(frozen=True, slots=True)
class AwsAdapters:
    crops: S3CropStore
    collection: RekognitionCollection
    names: DynamoNameDirectory
    shadow: IotShadow

    def resolver(self, config: AwsResolverConfig) -> Resolver:
        return Resolver(self.crops, self.collection, self.names, self.shadow, aws_identity(config),
                        config.templates_per_person)



def _aioboto3() -> Any:
    """The SDK, imported only now (see this module's docstring), or a clear error without the aws extra."""
    try:
        import aioboto3
    except ImportError as e:
        raise RuntimeError(f'resolver.type = "aws" needs the aws extra (pip install "facewatchd[aws]"): {e}') from None
    return aioboto3


def client_config(config: AwsResolverConfig, pool: int = 10) -> AioConfig:
    from aiobotocore.config import AioConfig

    return AioConfig(retries={"mode": "standard", "total_max_attempts": config.max_attempts}, max_pool_connections=pool,
                     connect_timeout=5, read_timeout=30)


def count_throttles(client: Any, on_throttle: Callable[[str], None]) -> None:
    """Call `on_throttle(operation)` for every throttled attempt of the client's calls, the ones botocore
    retries too: those never reach the adapter as an exception, yet are what an account's TPS limit
    looks like. Installed on botocore's needs-retry event, which sees every attempt's answer."""
    def seen(response: Any = None, operation: Any = None, **_: Any) -> None:
        parsed = response[1] if isinstance(response, tuple) and len(response) == 2 else {}
        if isinstance(parsed, dict) and parsed.get("Error", {}).get("Code") in THROTTLE_ERRORS:
            on_throttle(getattr(operation, "name", ""))
        return None  # no opinion: botocore's retry handler decides

    client.meta.events.register("needs-retry", seen)


@asynccontextmanager
async def open_aws_adapters(config: AwsResolverConfig, session: aioboto3.Session | None = None,
                            pool: int = 10, on_throttle: Callable[[str], None] | None = None,
                            clock: Callable[[], float] = time.time) -> AsyncIterator[AwsAdapters]:
    """The four adapters over clients that live as long as the context (and its event loop).
    Endpoints come from the standard AWS_ENDPOINT_URL_<SERVICE> variables when set. `on_throttle` is
    called with the operation's name each time Rekognition throttles a call (see count_throttles)."""
    session = session or _aioboto3().Session(region_name=config.region)
    cfg = client_config(config, pool)
    async with AsyncExitStack() as stack:
        s3, rek, ddb, iot = [await stack.enter_async_context(session.client(name, config=cfg))
                             for name in ("s3", "rekognition", "dynamodb", "iot-data")]
        if on_throttle is not None:
            count_throttles(rek, on_throttle)
        crops = S3CropStore(s3, config)
        yield AwsAdapters(crops, RekognitionCollection(rek, config, crops.read),
                          DynamoNameDirectory(ddb, config, clock=clock), IotShadow(iot))
