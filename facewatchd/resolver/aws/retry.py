"""What the AWS adapters share about a failed call: botocore's ClientError, its error code, and the backoff
before retrying what botocore cannot know is safe to retry.

Retries: botocore's standard mode (exponential backoff with full jitter) covers throttling and
transient errors on every call; on top of that we retry what botocore cannot know is safe to retry:
shadow version conflicts (iot_shadow.py) and DynamoDB transaction conflicts (dynamodb.py).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

# The SDK (0.6 s to import) is imported when the adapters open, so config.py can import this package
# for AwsResolverConfig quickly, and without the aws extra installed at all.
try:
    from botocore.exceptions import ClientError
except ImportError:
    class ClientError(Exception):  # type: ignore[no-redef]
        """Stand-in: without botocore no client exists, so this is never raised."""

        response: dict[str, Any] = {}


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


async def backoff(attempt: int, base_s: float = 0.05, cap_s: float = 2.0) -> None:
    # Full jitter: writers that collided once should not collide again in lockstep.
    await asyncio.sleep(random.uniform(0, min(cap_s, base_s * 2 ** attempt)))
