"""What every part's config shares: strict models, the device and logging sections, reading a TOML file,
and errors that name the file, the key path and what is wrong: `etc/facewatchd.toml: cameras[0].fps: must
be > 0, got -1`.

Each section's schema lives beside the code that uses it, a kind of link or resolver chosen by its `type`
key; `facewatchd.app.config` gathers them into `Config`. This module imports no part, so any may use it.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CONFIG = Path("etc/facewatchd.toml")


class ConfigError(ValueError):
    """A config that cannot be used; str() is the full, printable explanation."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceConfig(Strict):
    thing: str = Field("facewatchd-demo", pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
                       description="the device's thing name (AWS IoT thing / shadow name)")
    state_dir: Path = Field(Path(".state"), description="cache, outbox and local resolver data")
    workers: int = Field(2, ge=1, le=64, description="threads for face detection (SFace embeds on threads of its own)")
    embed_threads: int | None = Field(None, ge=1, le=8, description="threads for SFace, each with a network of its "
                                      "own (about 80 MB): default 1 for one camera, 2 for more where there are two "
                                      "cores (bench/cameras.py: 4 cameras held instead of 1); 1 with the torch "
                                      "embedder")
    drain_timeout_s: float = Field(10.0, ge=0, description="how long a finished run waits for pending answers")


class LoggingConfig(Strict):
    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "string_pattern_mismatch": "must match {pattern}",
    "union_tag_invalid": "must be one of {expected_tags}, got {tag!r}",
    "union_tag_not_found": "required key is missing",
    "literal_error": "must be {expected}",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} character(s) long",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
}
# pydantic's own prefixes for a validator's ValueError or assert: the message after them is ours.
_PREFIXES = ("Value error, ", "Assertion failed, ")
# Every union of config kinds (link, resolver) is chosen by its `type` key: errors about the choice name it.
_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}


def key_path(loc: tuple[int | str, ...]) -> str:
    """('cameras', 0, 'fps') → 'cameras[0].fps'; union branch names (the `type` tags) are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out and part in {"local", "mqtt", "awsiot", "greengrass", "aws"} and not out.endswith("type"):
            continue  # pydantic names the union branch; the user wrote no such key
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_errors(err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        template = _MESSAGES.get(e["type"])
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in e.get("ctx", {}).items()}
        msg = template.format(**ctx) if template else _without_prefix(e["msg"])
        if e["type"] == "list_type" and isinstance(e.get("input"), dict) and all(isinstance(p, str) for p in e["loc"]):
            table = prefix + ".".join(str(p) for p in e["loc"])  # `[cameras]` where `[[cameras]]` was meant
            msg += f": write [[{table}]] (double brackets) for each entry, not [{table}]"
        shown = "input" in e and not _is_table(e["input"])  # a table is no use in one line
        if e["type"] not in {"extra_forbidden", "missing"} and shown:
            msg += f", got {e['input']!r}"
        path = key_path(tuple(e["loc"]) + (("type",) if e["type"] in _TAG_ERRORS else ()))
        lines.append(f"{prefix}{path}: {msg}" if path != "(top level)" or not prefix else f"{prefix[:-1]}: {msg}")
    return lines


def _is_table(value: Any) -> bool:
    """A table, or a list of tables (`[[cameras]]`)."""
    return isinstance(value, (dict, BaseModel)) or (isinstance(value, list) and any(map(_is_table, value)))


def _without_prefix(message: str) -> str:
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


def _not_finite(value: Any, path: tuple[int | str, ...] = ()) -> list[str]:
    """Key paths of inf and nan values (TOML has both): no setting of ours means them, and a range check
    lets inf through (`fps = inf` is > 0)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{key_path(path)}: must be a finite number, got {value}"]
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _not_finite(item, path + (key,))]
    if isinstance(value, list):
        return [line for i, item in enumerate(value) for line in _not_finite(item, path + (i,))]
    return []


def read_config_data(p: Path) -> dict[str, Any]:
    """A config file's TOML, with a clear error for a file that cannot be read or is not TOML."""
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}): TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: nested too deeply") from None


Model = TypeVar("Model", bound=BaseModel)


def validate_config(model: type[Model], data: dict[str, Any], source: Path | None = None) -> Model:
    """`data` as `model`, or a ConfigError with every problem on its own line, each naming the file."""
    where = f"{source}: " if source else ""
    if infinite := _not_finite(data):
        raise ConfigError("\n".join(where + line for line in infinite))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError("\n".join(where + line for line in format_errors(e))) from None
