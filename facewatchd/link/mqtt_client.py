"""What every MQTT client of facewatchd shares: where it connects (`BrokerConfig`), a backoff with
jitter, and a connect that fails fast with the reason.

paho reports why a TLS peer hung up (e.g. a rejected client certificate) only in its log, and aiomqtt
then waits for its connect timeout; `connect_client` reads that log so the cause surfaces at once.
Used by the device's connections (link/mqtt_connection.py), the resolver service and the shadow service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

_AUTH_HINTS = (
    ("certificate verify failed", "the broker's certificate is not trusted by ca_file (or names another host)"),
    ("unknown ca", "the broker rejected the client certificate: it does not trust the CA that signed cert_file"),
    ("bad certificate", "the broker rejected the client certificate (cert_file/key_file)"),
    ("certificate required", "the broker requires a client certificate: set cert_file and key_file"),
    ("certificate expired", "the client certificate has expired"),
    ("certificate unknown", "the broker rejected the client certificate (cert_file/key_file)"),
    ("wrong version number", "TLS mismatch: is the port a plain-MQTT port, or is tls off for a TLS port?"),
    ("not author", "the broker refused this client (not authorized)"),
    ("bad user", "the broker refused the username/password"),
)



class BrokerConfig(BaseModel):
    """Where an MQTT client connects. The device link, the on-prem services and the plugins share these
    keys and their checks; each extends them with its own."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    tls: bool | None = None  # None: TLS when any of ca_file/cert_file is set
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(30, ge=5, le=65535)
    client_id: str | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "BrokerConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        if self.tls is False and (self.ca_file or self.cert_file):
            raise ValueError("tls is false but ca_file/cert_file are set")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self

    @property
    def use_tls(self) -> bool:
        return self.tls if self.tls is not None else bool(self.ca_file or self.cert_file)


class Backoff:
    """Exponential backoff with jitter (each delay uniform in [cap/2, cap]), so a fleet does not reconnect in step."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._min, self._max = min_s, max_s
        self._rng = rng or random.Random()
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        cap = min(self._max, self._min * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(cap / 2, cap)


def describe_failure(error: BaseException | str) -> tuple[str, bool]:
    """The failure's text with a hint, and whether it is an authentication/TLS refusal."""
    text = str(error)
    lowered = text.lower()
    for needle, hint in _AUTH_HINTS:
        if needle in lowered:
            return f"{text} ({hint})", True
    return text, False


class PahoLog(logging.Handler):
    """One client's paho/aiomqtt log: forwarded to structlog, and its errors kept as the failure cause.

    The logger is built directly (not through logging.getLogger), so nothing global is registered.
    """

    def __init__(self, log: Any) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self._loop = asyncio.get_running_loop()
        self.error: str | None = None
        self.failed = asyncio.Event()
        self.logger = logging.Logger("facewatchd.mqtt.paho", logging.WARNING)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.error = message
            self._loop.call_soon_threadsafe(self.failed.set)  # paho may log from aiomqtt's connect thread
        self._log.warning("mqtt client", detail=message)


async def connect_client(client: aiomqtt.Client, stack: contextlib.AsyncExitStack, paho: PahoLog) -> None:
    """Enter `client` on `stack`; fail at once when paho logs that the connection died (TLS alert…)."""
    entering = asyncio.ensure_future(stack.enter_async_context(client))
    failed = asyncio.ensure_future(paho.failed.wait())
    try:
        await asyncio.wait({entering, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not entering.done():
            entering.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await entering
    if entering.cancelled():
        raise aiomqtt.MqttError(paho.error or "connection lost during connect")
    error = entering.exception()
    if error is not None:
        if paho.error and isinstance(error, aiomqtt.MqttError):
            raise aiomqtt.MqttError(f"{error}: {paho.error}") from error
        raise error


def tls_params(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> aiomqtt.TLSParameters:
    return aiomqtt.TLSParameters(ca_certs=str(ca_file) if ca_file else None,
                                 certfile=str(cert_file) if cert_file else None,
                                 keyfile=str(key_file) if key_file else None)


