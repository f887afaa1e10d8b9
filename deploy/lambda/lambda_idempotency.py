"""Each SQS message handled at most once per message id: powertools idempotency over its own DynamoDB table."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine

import boto3
from aws_lambda_powertools.utilities.idempotency import (DynamoDBPersistenceLayer, IdempotencyConfig,
                                                         idempotent_function)
from botocore.config import Config

from lambda_settings import Settings

# The idempotency table's key and TTL attribute (powertools' defaults, named here for template.yaml and the tests).
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"


def _on_loop(*, message_id: str, loop: asyncio.AbstractEventLoop,
             work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """The idempotent function, in a worker thread. powertools idempotency has no async form (its boto3
    blocks: powertools-lambda-python#4483), so its DynamoDB calls around this hold that thread, never the
    loop; the work itself runs on the loop, where the aioboto3 clients live."""
    return asyncio.run_coroutine_threadsafe(work(), loop).result()


class Idempotency:
    """powertools idempotency over its own DynamoDB table (`id` key, TTL on `expiration`), keyed by the SQS
    message id: records in progress, completed (with the result) or gone when the work failed."""

    def __init__(self, settings: Settings, table: str) -> None:
        cfg = settings.resolver
        # Each worker waits for one message's work: room for BATCH_CONCURRENCY faces and dead letters beside.
        workers = settings.concurrency + 2
        self.config = IdempotencyConfig(expires_after_seconds=settings.idempotency_ttl_s)
        store = DynamoDBPersistenceLayer(
            table_name=table, key_attr=IDEMPOTENCY_KEY, expiry_attr=IDEMPOTENCY_TTL_ATTRIBUTE,
            boto3_session=boto3.session.Session(region_name=cfg.region),
            boto_config=Config(retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
                               connect_timeout=5, read_timeout=30,
                               max_pool_connections=max(10, workers)))
        self._run = idempotent_function(data_keyword_argument="message_id", persistence_store=store,
                                        config=self.config)(_on_loop)
        self.threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="idempotency")

    async def once(self, message_id: str, work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._run, message_id=message_id, loop=loop, work=work)
        # The copied context carries the record's log keys over to the work scheduled back on this loop.
        return await loop.run_in_executor(self.threads, contextvars.copy_context().run, call)
