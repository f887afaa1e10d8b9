"""How one SQS batch is worked through: powertools' batch processor on the container's loop, and the
turns that keep one thing's faces in order."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType


class BatchOnThisLoop(AsyncBatchProcessor):
    """powertools' AsyncBatchProcessor, awaited on the caller's loop. Its own `async_process` drives a loop
    of its choosing (asyncio.run outside Lambda; a new one per call in one release, powertools-lambda-python
    #7798); the aioboto3 clients are bound to the container's."""

    def __init__(self) -> None:
        # Every record failing is still a partial response (SQS retries each), not an exception.
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)

    async def process_here(self) -> None:
        await asyncio.gather(*(self._async_process_record(record) for record in self.records))


class Turns:
    """Order and concurrency within one batch: one thing's faces one after the other, in batch order (a
    person seen twice by one camera is indexed once), at most `concurrency` faces at once in all."""

    def __init__(self, concurrency: int) -> None:
        self._things: dict[str, asyncio.Lock] = {}
        self._limit = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def of(self, thing: str) -> AsyncIterator[None]:
        # asyncio.Lock is FIFO: records that ask in batch order are served in batch order.
        async with self._things.setdefault(thing, asyncio.Lock()), self._limit:
            yield
