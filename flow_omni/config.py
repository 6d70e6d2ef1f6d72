"""Typed dataclass configs that round-trip to plain dicts, JSON and YAML.

Every model config in flow_omni derives from :class:`Config`. Loading rejects unknown keys with a
message that names them and suggests the closest valid key, because a silently ignored typo
(``n_mel`` for ``n_mels``) is the most expensive kind of config bug: the run trains, just on the
wrong thing.

Configs are values: :meth:`Config.merged` returns a new config with overrides deep-merged in, and is
the one way overrides are applied (``--set`` items go through :func:`parse_overrides` first).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flow_omni.errors import ConfigError

_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

C = TypeVar("C", bound="Config")


class Whole(dict):
    """A mapping that :meth:`Config.merged` puts in place as it is, instead of merging it key by key into
    the mapping it overrides: ``--set data.task_weights={A2T: 1.0}`` sets exactly those weights."""


def _merge(base: Any, overrides: dict) -> dict:
    """``overrides`` deep-merged into the mapping ``base``, as a new mapping of base's type (neither changes).

    A plain ``dict`` merges into a mapping key by key; anything else (a :class:`Whole`, a Config, a
    list, a number, ...) replaces the entry.
    """
    out = type(base)(base)
    for key, value in overrides.items():
        old = out.get(key)
        out[key] = _merge(old, value) if type(value) is dict and isinstance(old, dict) else value
    return out


def _plain(value: Any) -> Any:
    """``value`` with every :class:`Whole` turned back into a plain dict (what the configs hold)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Command-line overrides ``["key.sub=value", ...]`` (values parsed as YAML) → a mapping for
    :meth:`Config.merged`. Items apply in order, so a later one wins.

    The dotted path merges (``optim.lr=1e-3`` changes only ``lr``); the value replaces the entry
    whole, also when it is a mapping (``data.task_weights={A2T: 1.0}`` keeps no other weight).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        node: Any = Whole(value) if isinstance(value, dict) else value
        for part in reversed(key.split(".")):
            node = {part: node}
        out = _merge(out, node)
    return out


def _resolve_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - forward refs we cannot resolve; fall back to raw
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/YAML value to the annotated field type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return tp.from_dict(value, _where=where)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: value {value!r} fits none of {args}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads `2e-3` as a string; everyone means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


@dataclasses.dataclass
class Config:
    """Base class: ``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json`` / YAML.

    Subclasses are plain dataclasses; nested ``Config`` fields round-trip too.
    """

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, (list, tuple)):
                value = [v.to_dict() if isinstance(v, Config) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, _where: str | None = None) -> C:
        where = _where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in fields]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; valid keys are {sorted(fields)}")
        types = _resolve_types(cls)
        kwargs = {k: _convert(v, types.get(k, Any), f"{where}.{k}") for k, v in data.items()}
        try:
            obj = cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{where}: {exc}") from None
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], text: str) -> C:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{cls.__name__}: not valid YAML ({exc})") from None
        return cls.from_dict(data or {})

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a config file: JSON for ``.json``, YAML for any other name (``.yaml``, ``.yml``, ...)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".json":
            return cls.from_json(text)
        return cls.from_yaml(text)

    def merged(self: C, overrides: dict[str, Any]) -> C:
        """A new config: this one with ``overrides`` deep-merged in (this one does not change).

        A mapping merges into a nested config (or a mapping field) key by key; any other value, and a
        :class:`Whole` mapping, replaces the field. The result is validated like a loaded config:
        unknown keys and wrong types raise ConfigError.
        """
        return type(self).from_dict(_plain(_merge(self.to_dict(), overrides)))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields set to new values, each taken whole (unknown names raise ConfigError)."""
        return self.merged({k: Whole(v) if isinstance(v, dict) else v for k, v in changes.items()})
