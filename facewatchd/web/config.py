"""`[web]`: where the review page listens, its user and password, TLS and the names it is served under."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from facewatchd.web.auth import is_password_hash, read_secret


class WebConfig(BaseModel):
    """`[web]`: the review page. It starts only with a password configured (hashed, or in a file)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="where to listen: localhost unless you mean otherwise")
    port: int = Field(8750, ge=0, le=65535, description="0: any free port (logged)")
    user: str = Field("admin", min_length=1, max_length=64, description="the name to log in with")
    password_hash: str | None = Field(None, description="from `facewatchd web-password` (asks for the password): "
                                      "scrypt$…")
    password_file: Path | None = Field(None, description="a file whose first line is the password hash")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    hostnames: list[str] = Field(default_factory=list, description="names the page is reached by, beside IP "
                                 "addresses, localhost and this machine's name (e.g. door.example.net); a request "
                                 "for any other name is refused (DNS rebinding)")

    @model_validator(mode="after")
    def _one_password(self) -> "WebConfig":
        if self.password_hash and self.password_file:
            raise ValueError("password_hash and password_file: set one of them")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.enabled:  # caught here, by check-config too: not as a traceback at start or a login that never works
            try:
                stored = self.stored_hash()
            except ValueError as e:
                raise PydanticCustomError("password_file", str(e)) from None
            if not is_password_hash(stored):  # the value is never echoed: it may be the password itself
                where = "password_hash" if self.password_hash else f"password_file {self.password_file}"
                raise PydanticCustomError("password_hash", f"{where} does not hold a password hash (scrypt$…): "
                                          "make one with `facewatchd web-password`")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.password_hash or self.password_file)

    def stored_hash(self) -> str:
        return self.password_hash or read_secret(self.password_file)  # type: ignore[arg-type]
