"""YAML ⇄ typed dataclasses, strictly: an unknown or missing key is an error that names its place.

Every configuration in the project goes through `load_config` so a typo in a YAML file can never be
silently ignored, and through `save_config` so every run writes the exact config it used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

# configs/ of the repository (a checkout, an editable install), or the copy a plain install ships inside robot_spec
INSTALLED_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = INSTALLED_CONFIG_DIR if INSTALLED_CONFIG_DIR.is_dir() else Path(__file__).resolve().parent.parent / "configs"
# More configs/ folders, searched before CONFIG_DIR (os.pathsep-separated): a new robot is robots/<name>.yaml in one
# of them (with its safety/, bridge/, train/ files as the commands need), found by name by every command.
CONFIG_PATH_VARIABLE = "GO1_SIM2REAL_CONFIGS"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message says where and how."""


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from plain data, checking keys and (shallowly) types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(fields)}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{name}' for {cls.__name__}")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a __post_init__ check: say which file (or place) the value came from
        raise ConfigError(f"{where}: {err}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    if hint is bool:
        # YAML gives real booleans; a string such as "False" here is a mistake, not a truthy value.
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def check_number(what: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, integer: bool = False) -> None:
    """ConfigError (one line, naming `what`) unless `value` is a finite number in [low, high] ((low, high] with
    `low_open`), and an integer if `integer`. None passes (an optional value left unset)."""
    if value is None:
        return
    kind = "an integer" if integer else "a finite number"
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not number or not math.isfinite(value) or not (
        (value > low if low_open else value >= low) and value <= high
    ):
        raise ConfigError(f"{what} = {value!r}: expected {kind} {_range_text(low, high, low_open)}".rstrip())


def check_fields(obj: Any, names: str, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, integer: bool = False) -> None:
    """check_number on each of the space-separated fields `names` of dataclass `obj` (for __post_init__)."""
    for name in names.split():
        check_number(f"{type(obj).__name__}.{name}", getattr(obj, name), low, high, low_open=low_open,
                     integer=integer)  # fmt: skip


def _range_text(low: float, high: float, low_open: bool) -> str:
    if math.isinf(high):
        return "" if math.isinf(low) else f"{'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f"<= {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}]"


def load_config(cls: type[T], path: str | Path, overrides: dict | None = None) -> T:
    data = read_yaml(path)
    if overrides:
        data = merge(data, overrides)
    return from_dict(cls, data, where=str(path))


# PyYAML reads YAML 1.1, where 5e-4 (no dot) is a string; on the command line it means the number.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
OVERRIDE_HELP = ("override any config value, Hydra style: KEY.PATH=VALUE ... (e.g. ppo.learning_rate=5e-4 "
                 "env.num_envs=1024; values are YAML: 3, 0.5, true, [1, 2]); checked like the YAML file and "
                 "written into the run's saved config")  # fmt: skip


def parse_overrides(items: list[str] | None) -> dict:
    """`--set` items ["ppo.learning_rate=5e-4", "env.num_envs=1024"] -> a nested dict for `load_config`'s
    overrides, which checks every key and type as strictly as the YAML file's own."""
    out: dict = {}
    for item in items or []:
        key, equals, text = item.partition("=")
        path = key.strip().split(".")
        if not equals or not all(path):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. ppo.learning_rate=5e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            value = float(value)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is given a value and sub-keys")
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"--set {item!r}: {key} is given a value and sub-keys")
        node[path[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def save_config(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path


def config_dirs() -> list[Path]:
    """Where configs are looked up, first match wins: the folders in $GO1_SIM2REAL_CONFIGS, then the project's."""
    extra = [Path(d) for d in os.environ.get(CONFIG_PATH_VARIABLE, "").split(os.pathsep) if d]
    return [*extra, CONFIG_DIR]


def named_config(kind: str, name: str) -> Path:
    """<kind>/<name>.yaml in the first of `config_dirs()` that has it (or `name` itself, a path to a .yaml file),
    or a ConfigError listing the names that exist."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    for root in config_dirs():
        path = root / kind / f"{name}.yaml"
        if path.is_file():
            return path
    known = sorted({p.stem for root in config_dirs() for p in (root / kind).glob("*.yaml")})
    raise ConfigError(f"unknown {kind} '{name}'; known: {', '.join(known) or '(none)'}")
