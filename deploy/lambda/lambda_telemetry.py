"""The Lambda's logs and metrics: structlog through powertools' Logger (one JSON shape for every line), and the
EMF metrics' namespace and service."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import structlog
from aws_lambda_powertools import Logger

# CloudWatch namespace and service dimension of the EMF metrics; template.yaml's alarms and dashboard use them.
METRICS_NAMESPACE = "facewatchd"
METRICS_SERVICE = "resolver"


class _Stdout:
    """sys.stdout as it is at each write (the runtime's, or a test's capture), not as it was at start."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


# LogRecord's own attributes: stdlib refuses them in `extra` (KeyError), so such event keys get a "_".
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Frames between the code that logs and powertools' Logger: structlog's bound method and its proxy.
_STRUCTLOG_FRAMES = 2


def _to_powertools(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog's last processor: the event as powertools Logger's arguments."""
    message = str(event_dict.pop("event", ""))
    exc_info = event_dict.pop("exc_info", None)
    extra = {f"{k}_" if k in _RESERVED else k: v for k, v in event_dict.items()}
    return {"msg": message, "extra": extra, "exc_info": exc_info, "stacklevel": 2 + _STRUCTLOG_FRAMES}


@functools.cache
def lambda_logger() -> Logger:
    """The process's one powertools Logger (its stdlib logger and handler are per process, like the runtime's)."""
    return Logger(service=METRICS_SERVICE, logger_handler=logging.StreamHandler(_Stdout()))


def configure_lambda_logging(logger: Logger) -> None:
    """structlog, which the core and the adapters log with, written through powertools' Logger: one JSON
    shape for every line, with the keys the Logger holds for the invocation (inject_lambda_context) and
    those bound for the record in hand (structlog contextvars, per task)."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _to_powertools],
        wrapper_class=structlog.make_filtering_bound_logger(logger.log_level),
        logger_factory=lambda *_: logger,
        cache_logger_on_first_use=False,
    )
