"""The door page's tests use the plugins' state where Obama and Biden are enrolled."""

from tests.plugins.conftest import enrolled  # noqa: F401  (a fixture, found by name)
