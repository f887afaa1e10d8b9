"""The plugin host: loads built-in integrations (plugins/) and third-party ones (entry point group
`facewatchd.plugins`) through the same hooks, validates their config sections, and fires hooks
without ever making the frame loop wait.

A plugin is a module with hook implementations; if it defines a class `Plugin`, an instance of it is
registered instead, so a plugin keeps its state on itself rather than in module globals.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import pkgutil
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
import structlog
from pydantic import BaseModel, ValidationError

from facewatchd import hookspecs
from facewatchd.config import Config, ConfigError, format_errors

log = structlog.get_logger("facewatchd.plugins")

ENTRY_POINT_GROUP = "facewatchd.plugins"
HOOK_TIMEOUT_S = 5.0


@dataclass
class PluginInfo:
    name: str
    origin: str  # "builtin" or the distribution that provides the entry point
    module: str
    hooks: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginContext:
    """What a plugin gets at start: the whole config, its own validated section, and the loop."""

    config: Config
    loop: asyncio.AbstractEventLoop
    plugin_configs: dict[str, BaseModel]
    host: "PluginHost"

    def plugin_config(self, name: str) -> Any:
        return self.plugin_configs.get(name)


def builtin_plugin_names() -> list[str]:
    import plugins as builtin

    return sorted(m.name for m in pkgutil.iter_modules(builtin.__path__) if m.ispkg)


def read_manifest(module: ModuleType) -> dict[str, Any]:
    path = Path(module.__file__ or "").parent / "manifest.toml"
    return tomllib.loads(path.read_text()) if path.is_file() else {}


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
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="plugin-hook")
        self.context: PluginContext | None = None

    # -- loading --------------------------------------------------------------------------------
    def _enabled(self, name: str, default: bool) -> bool:
        section = self.config.plugins.get(name)
        if section is None:
            return default
        enabled = section.get("enabled", True)
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

    def load(self) -> None:
        """Register enabled built-ins (on when their section exists) and installed third-party plugins."""
        for name in builtin_plugin_names():
            if self._enabled(name, default=False):
                self.register(name, importlib.import_module(f"plugins.{name}"), "builtin")
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

    def _validate_sections(self) -> None:
        schemas: dict[str, type[BaseModel]] = {}
        for impl in self.pm.hook.facewatchd_config_schema.get_hookimpls():
            result = impl.function()
            if result:
                section, model = result
                schemas[section] = model
        errors: list[str] = []
        for section, values in self.config.plugins.items():
            if not isinstance(values, dict):
                errors.append(f"plugins.{section}: must be a table")
                continue
            values = {k: v for k, v in values.items() if k != "enabled"}
            if section not in schemas:
                if section not in self.infos and section not in builtin_plugin_names():
                    errors.append(f"plugins.{section}: no such plugin (installed: "
                                  f"{', '.join(sorted(set(builtin_plugin_names()) | set(self.infos))) or 'none'})")
                continue
            try:
                self.plugin_configs[section] = schemas[section].model_validate(values)
            except ValidationError as e:
                errors += format_errors(e, prefix=f"plugins.{section}.")
        for section, model in schemas.items():
            if section not in self.plugin_configs and section in self.infos:
                try:
                    self.plugin_configs[section] = model.model_validate({})
                except ValidationError as e:
                    errors += format_errors(e, prefix=f"plugins.{section}.")
        if errors:
            raise ConfigError("\n".join(self._where() + line for line in errors))

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.context = PluginContext(self.config, asyncio.get_running_loop(), self.plugin_configs, self)
        await self._call_all("facewatchd_start", {"context": self.context})

    async def stop(self) -> None:
        await self.drain()
        if self.context is not None:
            await self._call_all("facewatchd_stop", {"context": self.context})
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait (bounded) for hooks still running, e.g. at the end of a run."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout or self.hook_timeout_s)

    async def _call_all(self, hook: str, kwargs: dict[str, Any]) -> None:
        await asyncio.gather(*(self._run(impl, hook, kwargs) for impl in getattr(self.pm.hook, hook).get_hookimpls()))

    # -- firing ---------------------------------------------------------------------------------
    def fire(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of `hook` in the background; never blocks, never raises."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            task = asyncio.get_running_loop().create_task(self._run(impl, hook, kwargs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, impl: pluggy.HookImpl, hook: str, kwargs: dict[str, Any]) -> None:
        args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
        try:
            if inspect.iscoroutinefunction(impl.function):
                await asyncio.wait_for(impl.function(**args), self.hook_timeout_s)
            else:
                loop = asyncio.get_running_loop()
                result = await asyncio.wait_for(loop.run_in_executor(self._executor, lambda: impl.function(**args)),
                                                self.hook_timeout_s)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, self.hook_timeout_s)
        except TimeoutError:
            self.failures[impl.plugin_name] = self.failures.get(impl.plugin_name, 0) + 1
            log.error("plugin_hook_timeout", plugin=impl.plugin_name, hook=hook, timeout_s=self.hook_timeout_s)
        except Exception as e:
            self.failures[impl.plugin_name] = self.failures.get(impl.plugin_name, 0) + 1
            log.error("plugin_hook_failed", plugin=impl.plugin_name, hook=hook, error=repr(e))
