"""Shared fixtures; each lives in tests/support/ beside the helper it wraps."""

from tests.support.fixtures import broker, pki, postgres_dsn, postgres_server, tls_broker  # noqa: F401
