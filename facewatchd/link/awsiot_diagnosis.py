"""Naming why a connect to AWS IoT failed: awscrt's error text, a hint for each refusal, and a TLS check.

awscrt reports a refused TLS handshake vaguely ("Failure during TLS read"), and an untrusted broker
certificate only after s2n's 10-30 s anti-timing delay. So when a connect fails, or is still pending
after two seconds, the link (awsiot.py) runs one TLS handshake of its own (`tls_probe`: Python's ssl,
same files) to name the cause.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

_HINTS = (  # (text in the failure, hint, whether it is a refusal that retrying will not fix)
    ("certificate verify failed", "the broker's certificate is not trusted by ca_file (or names another host)", True),
    ("unknown ca", "the broker rejected the client certificate: it does not trust the CA that signed cert_file",
     True),
    ("bad certificate", "the broker rejected the client certificate (cert_file/key_file)", True),
    ("certificate unknown", "the broker rejected the client certificate (cert_file/key_file)", True),
    ("certificate required", "the broker requires a client certificate", True),
    ("certificate expired", "the client certificate has expired", True),
    ("certificate revoked", "the client certificate is revoked", True),
    ("closed the connection right after the tls handshake",
     "AWS IoT does this for a certificate that is not registered, not active, or has no policy attached", True),
    ("wrong version number", "TLS mismatch: is the port a plain-MQTT port?", True),
    ("not_authorized", "the broker refused this client: check the IoT policy allows iot:Connect for client_id",
     True),
    ("bad_username_or_password", "the broker refused the credentials", True),
    ("banned", "the broker banned this client", True),
    ("client_identifier_not_valid", "the broker refused client_id", True),
    ("aws_io_tls_error_read_failure", "the broker ended the TLS session while connecting", False),
)


def describe_failure(text: str) -> tuple[str, bool]:
    """The failure's text with a hint, and whether it is a refusal (TLS, certificate, authorization)."""
    lowered = text.lower()
    for needle, hint, refused in _HINTS:
        if needle in lowered:
            return f"{text} ({hint})", refused
    return text, False


def crt_error_text(error: BaseException | None) -> str:
    """`NAME: message` for an AwsCrtError (and the SDK's wrappers of one), str() for anything else."""
    inner = getattr(error, "inner_error", None)
    if inner is not None:
        error = inner
    name, message = getattr(error, "name", None), getattr(error, "message", None)
    if isinstance(name, str) and isinstance(message, str):
        return f"{name}: {message}"
    return f"{type(error).__name__}: {error}" if error is not None else "unknown error"


def tls_probe(host: str, port: int, ca_file: Path | None, cert_file: Path, key_file: Path,
              timeout: float) -> str | None:
    """One TLS handshake with the link's files; the TLS problem it meets, or None (also when TCP fails,
    which awscrt reports well enough). Blocking: run it in a thread."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.load_cert_chain(str(cert_file), str(key_file))
        if port == 443:
            context.set_alpn_protocols(["x-amzn-mqtt-ca"])  # AWS IoT's MQTT-over-443 needs it
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                # With TLS 1.3 a rejected client certificate arrives as an alert after the handshake.
                tls.settimeout(0.5)
                try:
                    data = tls.recv(1)
                except (TimeoutError, socket.timeout):
                    return None  # the broker waits for CONNECT: TLS is fine
                return None if data else "the broker closed the connection right after the TLS handshake"
    except ssl.SSLError as e:
        return f"ssl: {e}"
    except OSError:
        return None
