"""A real Home Assistant for the tests: the release pinned in homeassistant-requirements.txt, from the
virtual environment `make test` builds (.venv-ha), started on a free loopback port with a config directory
the test writes, onboarded through its REST API like a new user's browser does, and given an MQTT config
entry (a config flow, as the UI adds one) that points at the test's mosquitto.

`HomeAssistant` is synchronous test scaffolding (a subprocess and `requests`); `HaClient` is HA's websocket
API (registries, events) for async tests, over aiohttp.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from tests.support.broker import HOST, free_port
from tests.support.daemon import ROOT
from tests.support.process import ServerProcess

HA_VENV = Path(os.environ.get("HA_VENV", ROOT / ".venv-ha"))
HASS = HA_VENV / "bin" / "hass"
CONFIGURATION = """\
homeassistant:
  name: facewatchd test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
http:
  server_host: {host}
  server_port: {port}
logger:
  default: warning
"""


def hass_or_fail() -> Path:
    """The hass binary; missing, the tests fail in CI (CI=true) and are skipped on a laptop without it."""
    if HASS.exists():
        return HASS
    message = f"{HASS} is missing: `make test` (or `make ha-venv`) installs Home Assistant there"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class HomeAssistant(ServerProcess):
    def __init__(self, config_dir: Path, port: int | None = None) -> None:
        self.config_dir = config_dir
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.client_id = f"{self.url}/"
        self.token = ""
        self.log_file = config_dir / "hass.out"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- process --------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        hass = hass_or_fail()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(CONFIGURATION.format(host=HOST, port=self.port))
        # --skip-pip: every requirement is in .venv-ha already; HA must not reach for PyPI at test time
        self._proc = subprocess.Popen([str(hass), "-c", str(self.config_dir), "--skip-pip"],
                                      stdout=self.log_file.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"hass exited with {self._proc.returncode}:\n{self.log()[-4000:]}")
            try:
                # /api/ answers once HA has started: 401 without a token (before onboarding, and after it)
                if requests.get(f"{self.url}/api/", timeout=2).status_code in (200, 401):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hass did not answer on {self.url} within {timeout}s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def problems(self, *loggers: str) -> list[str]:
        """HA's WARNING and ERROR lines from these loggers (e.g. homeassistant.components.mqtt), every start."""
        return [line for line in self.log().splitlines()
                if (" WARNING " in line or " ERROR " in line) and any(f"[{name}" in line for name in loggers)]

    # -- onboarding and the MQTT config entry ---------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], auth: bool = True, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        response = requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code in ok, f"POST {path}: {response.status_code} {response.text}"
        return dict(response.json()) if response.status_code == 200 else {}

    def onboard(self) -> None:
        """The four onboarding steps a new user's browser takes; afterwards `token` is an admin's."""
        code = self._post("/api/onboarding/users", {"client_id": self.client_id, "name": "Test", "username": "test",
                                                     "password": "test-password-1", "language": "en"},
                          auth=False)["auth_code"]
        response = requests.post(f"{self.url}/auth/token", data={"grant_type": "authorization_code", "code": code,
                                                                  "client_id": self.client_id}, timeout=30)
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        # This step marks itself done, then starts the flows of HA's suggested integrations (met, radio_browser,
        # google_translate, shopping_list): their packages are not installed (they would fetch from the internet
        # at start), so the answer may be a 500. The check of every step below is what counts.
        self._post("/api/onboarding/core_config", {}, ok=(200, 500))
        self._post("/api/onboarding/analytics", {})
        self._post("/api/onboarding/integration", {"client_id": self.client_id, "redirect_uri": self.client_id})
        steps = requests.get(f"{self.url}/api/onboarding", timeout=10).json()
        assert all(step["done"] for step in steps), steps

    def add_mqtt(self, host: str, port: int) -> str:
        """MQTT as the UI adds it (2024.3 has no YAML broker config): a config flow; returns the entry id."""
        flow = self._post("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        assert flow.get("step_id") == "broker", flow
        done = self._post(f"/api/config/config_entries/flow/{flow['flow_id']}", {"broker": host, "port": port})
        assert done.get("type") == "create_entry", done
        return str(done["result"]["entry_id"])

    # -- REST -----------------------------------------------------------------------------------
    def state(self, entity_id: str) -> dict[str, Any] | None:
        response = requests.get(f"{self.url}/api/states/{entity_id}",
                                headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())


class HaClient:
    """HA's websocket API: `call` a command, and every event of the types `subscribe`d to in `events`."""

    def __init__(self, ha: HomeAssistant) -> None:
        self.ha = ha
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "HaClient":
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(f"{self.ha.url}/api/websocket")
        assert (await self._ws.receive_json())["type"] == "auth_required"
        await self._ws.send_json({"type": "auth", "access_token": self.ha.token})
        answer = await self._ws.receive_json()
        assert answer["type"] == "auth_ok", answer
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = message.json()
            if data.get("type") == "event":
                self.events.append(data["event"])
            elif (future := self._answers.pop(data.get("id", -1), None)) is not None and not future.done():
                future.set_result(data)

    async def call(self, kind: str, **fields: Any) -> Any:
        assert self._ws is not None
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[ident] = future
        await self._ws.send_json({"id": ident, "type": kind, **fields})
        answer = await asyncio.wait_for(future, 30)
        assert answer.get("success"), answer
        return answer["result"]

    async def subscribe(self, event_type: str) -> None:
        await self.call("subscribe_events", event_type=event_type)

    async def entities(self) -> list[dict[str, Any]]:
        return list(await self.call("config/entity_registry/list"))

    async def devices(self) -> list[dict[str, Any]]:
        return list(await self.call("config/device_registry/list"))

    async def entity(self, unique_id: str) -> dict[str, Any] | None:
        return next((e for e in await self.entities() if e["unique_id"] == unique_id and e["platform"] == "mqtt"),
                    None)

    async def device(self, identifier: str) -> dict[str, Any] | None:
        return next((d for d in await self.devices() if ["mqtt", identifier] in d["identifiers"]), None)

    async def state(self, unique_id: str) -> dict[str, Any] | None:
        """The state of the MQTT entity with this unique id (REST), None while HA has no such entity."""
        entry = await self.entity(unique_id)
        return None if entry is None else await asyncio.to_thread(self.ha.state, entry["entity_id"])
