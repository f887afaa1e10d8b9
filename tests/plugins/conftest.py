"""A state directory where Obama and Biden are enrolled (through the real command line) and the device
cache already knows their faces and a stranger's, so a visit is named from the first frame on; and one real
Home Assistant for the session (`ha`, and a websocket `client` per test)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from tests.plugins.ha_support import Ha
from tests.plugins.support import stranger_photo
from tests.support.broker import Mosquitto
from tests.support.daemon import FIXTURES, cli, make_config, run_daemon
from tests.support.homeassistant import HaClient, HomeAssistant, hass_or_fail


@dataclass(frozen=True)
class Enrolled:
    template: Path  # state dir to copy (never run on directly)
    stranger: Path  # a photo of someone not enrolled
    persons: dict[str, str | None]  # person id → name, as the device cache knows them

    def person_id(self, name: str) -> str:
        return next(pid for pid, n in self.persons.items() if n == name)

    def state(self, tmp_path: Path) -> Path:
        target = tmp_path / "state"
        shutil.copytree(self.template, target)
        return target


@pytest.fixture(scope="session")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> Enrolled:
    root = tmp_path_factory.mktemp("enrolled")
    state = root / "state"
    config_file = root / "facewatchd.toml"
    config_file.write_text(f'[device]\nstate_dir = "{state}"\n')
    cli("faces", "enroll", "Barack Obama", str(FIXTURES / "obama.jpg"), "--config", str(config_file))
    cli("faces", "enroll", "Joe Biden", str(FIXTURES / "biden.jpg"), "--config", str(config_file))
    stranger = stranger_photo(root / "stranger.jpg")
    # One frame each: the tracks end before the resolver answers; its answers fill the device cache.
    summary = run_daemon(make_config(state, FIXTURES / "obama1.jpg", FIXTURES / "biden.jpg", stranger))
    assert summary.pending == 0 and summary.resolver_calls == 3
    persons = {pid: p["name"] for pid, p in summary.persons.items()}
    assert sorted(n or "" for n in persons.values()) == ["", "Barack Obama", "Joe Biden"], summary.persons
    return Enrolled(state, stranger, persons)


@pytest.fixture(scope="session")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ha]:
    hass_or_fail()
    with Mosquitto(tmp_path_factory.mktemp("ha-broker"), log_subscriptions=True) as broker, \
            HomeAssistant(tmp_path_factory.mktemp("ha-config")) as home:
        home.onboard()
        yield Ha(home, broker, home.add_mqtt(broker.host, broker.port))


@pytest.fixture
async def client(ha: Ha) -> AsyncIterator[HaClient]:
    async with HaClient(ha.home) as c:
        yield c
