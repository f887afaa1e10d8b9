"""The plugin host: loads built-in integrations (plugins/) and third-party ones (entry point group
`facewatchd.plugins`) through the same hooks, validates their config sections, and fires hooks
without ever making the frame loop wait.

A plugin is a module with hook implementations; if it defines a class `Plugin`, an instance of it is
registered instead, so a plugin keeps its state on itself rather than in module globals.

Hooks run in the background: an `async def` hook as a task on the loop, a plain function on its
plugin's own worker thread (one per plugin, so a plugin's hooks run in order and a plugin that hangs
holds up only itself). Every call has a timeout; failures are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.metadata
import inspect
import pkgutil
import queue
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import pluggy
import structlog
from pydantic import BaseModel, ValidationError

from facewatchd import hookspecs
from facewatchd.app.config import Config
from facewatchd.config import ConfigError, format_errors, key_path

if TYPE_CHECKING:
    from facewatchd.link.mqtt_connection import MqttConnections

log = structlog.get_logger("facewatchd.plugins")

ENTRY_POINT_GROUP = "facewatchd.plugins"
HOOK_TIMEOUT_S = 5.0
LIFECYCLE_TIMEOUT_S = 15.0  # facewatchd_start/stop may connect, flush or relock a door: more than an event hook


@dataclass
class PluginInfo:
    name: str
    origin: str  # "builtin" or the distribution that provides the entry point
    module: str
    hooks: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginContext:
    """What a plugin gets at start: the whole config, its own validated section, the loop, and the device's
    MQTT connections (a plugin's client joins the one for its broker and credentials: see plugins/_mqtt.py)."""

    config: Config
    loop: asyncio.AbstractEventLoop
    plugin_configs: dict[str, BaseModel]
    host: "PluginHost"

    @property
    def mqtt(self) -> "MqttConnections":
        return self.host.mqtt

    def plugin_config(self, name: str) -> Any:
        return self.plugin_configs.get(name)


def builtin_plugin_names() -> list[str]:
    import plugins as builtin

    return sorted(m.name for m in pkgutil.iter_modules(builtin.__path__) if m.ispkg and not m.name.startswith("_"))


def builtin_manifest(name: str) -> dict[str, Any]:
    """A built-in's manifest.toml, read without importing it (its extras need not be installed)."""
    import plugins as builtin

    path = Path(builtin.__path__[0]) / name / "manifest.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def read_manifest(module: ModuleType) -> dict[str, Any]:
    path = Path(module.__file__ or "").parent / "manifest.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


def plugin_key_path(values: Any, loc: tuple[int | str, ...]) -> str:
    """Like config.key_path, but drops the tag pydantic adds for a `type`-tagged union member
    (`backend.http.url` → `backend.url`), found by walking the values the user wrote."""
    kept: list[int | str] = []
    node = values
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the union branch chosen by `type`: not a key the user wrote
        kept.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return key_path(tuple(kept))


class HookWorker:
    """One daemon thread that runs a plugin's plain (non-async) hooks in order.

    A daemon thread, unlike a ThreadPoolExecutor's, never keeps the process alive: a hook that hangs
    for good is abandoned at exit instead of blocking it.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"plugin-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if future.cancelled():  # timed out while waiting for an earlier, slow call
                continue
            try:
                result, error = fn(), None
            except BaseException as e:  # handed to the loop, which logs it
                result, error = None, e
            try:
                future.get_loop().call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is gone (the daemon ended while this hook ran)
                pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class PluginHost:
    def __init__(self, config: Config, hook_timeout_s: float = HOOK_TIMEOUT_S) -> None:
        self.config = config
        self.hook_timeout_s = hook_timeout_s
        self.pm = pluggy.PluginManager("facewatchd")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.plugin_configs: dict[str, BaseModel] = {}
        self.failures: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: dict[str, HookWorker] = {}
        self.context: PluginContext | None = None
        self.health: Callable[[], str | None] = lambda: None  # what is broken in the process, set by its owner

    # -- loading --------------------------------------------------------------------------------
    def _enabled(self, name: str, default: bool) -> bool:
        section = self.config.plugins.get(name)
        if section is None:
            return default
        enabled = section.get("enabled", True) if isinstance(section, dict) else True
        if not isinstance(enabled, bool):
            raise ConfigError(f"{self._where()}plugins.{name}.enabled: must be true or false, got {enabled!r}")
        return enabled

    def _where(self) -> str:
        return f"{self.config.source}: " if self.config.source else ""

    def register(self, name: str, module: ModuleType | Any, origin: str) -> None:
        plugin = module.Plugin() if isinstance(module, ModuleType) and hasattr(module, "Plugin") else module
        self.pm.register(plugin, name=name)
        mod_name = module.__name__ if isinstance(module, ModuleType) else type(module).__module__
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        manifest = read_manifest(module) if isinstance(module, ModuleType) else {}
        self.infos[name] = PluginInfo(name, origin, mod_name, hooks, manifest)

    def plugin_of(self, filename: str) -> str | None:
        """The plugin a source file belongs to (the loop watchdog names the plugin that blocks the loop): a
        package plugin is its folder, a module plugin or a plugin object's class its file."""
        path = Path(filename)
        for name, plugin in self.pm.list_name_plugin():
            module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(type(plugin).__module__)
            source = getattr(module, "__file__", None)
            if not source:
                continue
            source_path = Path(source)
            if source_path.name == "__init__.py":
                source_path = source_path.parent
            if path == source_path or source_path in path.parents:
                return name
        return None

    def _import_builtin(self, name: str) -> ModuleType:
        try:
            return importlib.import_module(f"plugins.{name}")
        except ModuleNotFoundError as e:
            if e.name and not e.name.startswith("plugins"):
                raise ConfigError(f"{self._where()}plugins.{name}: needs the Python package {e.name!r}, which is "
                                  f"not installed (see plugins/{name}/manifest.toml for its requirements)") from None
            raise

    def load(self) -> None:
        """Register enabled built-ins (on when their section exists) and installed third-party plugins."""
        for name in builtin_plugin_names():
            if self._enabled(name, default=False):
                self.register(name, self._import_builtin(name), "builtin")
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.infos or not self._enabled(ep.name, default=True):
                continue
            try:
                module = ep.load()
            except Exception as e:  # a broken third-party plugin must not take the daemon down
                log.error("plugin_load_failed", plugin=ep.name, error=repr(e))
                continue
            self.register(ep.name, module, ep.dist.name if ep.dist else "entry point")
        self._validate_sections()

    def _schemas(self) -> dict[str, type[BaseModel]]:
        schemas: dict[str, type[BaseModel]] = {}
        for impl in self.pm.hook.facewatchd_config_schema.get_hookimpls():
            try:
                result = impl.function()
                if result:
                    section, model = result
                    if not (isinstance(section, str) and isinstance(model, type) and issubclass(model, BaseModel)):
                        raise TypeError("must return (section name, pydantic model class)")
                    schemas[section] = model
            except Exception as e:
                raise ConfigError(f"{self._where()}plugins.{impl.plugin_name}: its facewatchd_config_schema hook "
                                  f"failed: {e}") from None
        return schemas

    def _validate_sections(self) -> None:
        schemas = self._schemas()
        errors: list[str] = []
        for section, values in self.config.plugins.items():
            if not isinstance(values, dict):
                errors.append(f"plugins.{section}: must be a table")
                continue
            if values.get("enabled") is False:
                continue  # switched off: its plugin is not loaded, so nothing can check (or use) the rest
            values = {k: v for k, v in values.items() if k != "enabled"}
            if section not in schemas:
                if section not in self.infos and section not in builtin_plugin_names():
                    errors.append(f"plugins.{section}: no such plugin (installed: "
                                  f"{', '.join(sorted(set(builtin_plugin_names()) | set(self.infos))) or 'none'})")
                continue
            try:
                self.plugin_configs[section] = schemas[section].model_validate(values)
            except ValidationError as e:
                errors += self._format(e, section, values)
        for section, model in schemas.items():
            if section not in self.config.plugins and section in self.infos:  # no section: defaults
                try:
                    self.plugin_configs[section] = model.model_validate({})
                except ValidationError as e:
                    errors += self._format(e, section, {})
        if errors:
            raise ConfigError("\n".join(self._where() + line for line in errors))

    @staticmethod
    def _format(err: ValidationError, section: str, values: dict[str, Any]) -> list[str]:
        lines = format_errors(err, prefix=f"plugins.{section}.")
        out = []
        for line, e in zip(lines, err.errors(), strict=True):
            loc = tuple(e["loc"])
            written, plain = plugin_key_path(values, loc), key_path(loc)
            out.append(line.replace(f".{plain}:", f".{written}:", 1) if written != plain else line)
        return out

    @functools.cached_property
    def mqtt(self) -> "MqttConnections":
        """The device's MQTT connections, one per broker identity, shared by the plugins and the link (the
        daemon hands it to the link), so one certificate never holds two connections. aiomqtt is an extra:
        imported only when something asks."""
        from facewatchd.link.mqtt_connection import MqttConnections

        return MqttConnections(self.config.device.thing)

    def liveness_demands(self) -> list[Any]:
        """What the plugins need liveness evidence for (after start: a plugin asks from its own config)."""
        return self._demands("liveness_demand")

    def evidence_demands(self) -> list[Any]:
        """The tracks the plugins act on, which get fresh embeddings on a beat (after start)."""
        return self._demands("evidence_demand")

    def _demands(self, hook: str) -> list[Any]:
        demands = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                demand = impl.function()
            except Exception as e:  # a door whose demand is lost would wait for evidence forever: say so
                raise ConfigError(f"plugins.{impl.plugin_name}: its {hook} hook failed: {e!r}") from None
            if demand is not None:
                demands.append(demand)
        return demands

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.context = PluginContext(self.config, asyncio.get_running_loop(), self.plugin_configs, self)
        await self._call_all("facewatchd_start", {"context": self.context}, self._lifecycle_timeout)

    async def stop(self) -> None:
        """Stop every plugin once (a second call does nothing)."""
        await self.drain()
        if self.context is not None:
            context, self.context = self.context, None
            await self._call_all("facewatchd_stop", {"context": context}, self._lifecycle_timeout)
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    @property
    def _lifecycle_timeout(self) -> float:
        return max(LIFECYCLE_TIMEOUT_S, self.hook_timeout_s)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait (bounded) for hooks still running, e.g. at the end of a run."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout or self.hook_timeout_s)

    async def _call_all(self, hook: str, kwargs: dict[str, Any], timeout: float) -> None:
        await asyncio.gather(*(self._run(impl, hook, kwargs, timeout)
                               for impl in getattr(self.pm.hook, hook).get_hookimpls()))

    # -- firing ---------------------------------------------------------------------------------
    def fire(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of `hook` in the background; never blocks, never raises."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        if not impls:
            return
        loop = asyncio.get_running_loop()
        for impl in impls:
            task = loop.create_task(self._run(impl, hook, kwargs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _worker(self, plugin: str) -> HookWorker:
        if plugin not in self._workers:
            self._workers[plugin] = HookWorker(plugin)
        return self._workers[plugin]

    async def _run(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any],
                   timeout: float | None = None) -> None:
        args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
        timeout = timeout or self.hook_timeout_s
        try:
            async with asyncio.timeout(timeout):  # runs the hook in this task: no extra task per call
                if inspect.iscoroutinefunction(impl.function):
                    await impl.function(**args)
                else:
                    result = await self._worker(impl.plugin_name).submit(lambda: impl.function(**args))
                    if inspect.isawaitable(result):
                        await result
        except TimeoutError:
            self.failures[impl.plugin_name] = self.failures.get(impl.plugin_name, 0) + 1
            log.error("plugin_hook_timeout", plugin=impl.plugin_name, hook=hook, timeout_s=timeout)
        except Exception as e:
            self.failures[impl.plugin_name] = self.failures.get(impl.plugin_name, 0) + 1
            log.error("plugin_hook_failed", plugin=impl.plugin_name, hook=hook, error=repr(e))
