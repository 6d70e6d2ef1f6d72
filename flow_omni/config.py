"""Typed dataclass configs that round-trip to plain dicts, JSON and YAML.

Every model config in flow_omni derives from :class:`Config`. Loading rejects unknown keys with a
message that names them and suggests the closest valid key, because a silently ignored typo
(``n_mel`` for ``n_mels``) is the most expensive kind of config bug: the run trains, just on the
wrong thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from flow_omni.errors import ConfigError

_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

C = TypeVar("C", bound="Config")


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
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(hints)}; valid keys are {sorted(fields)}"
            )
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
        """Read a ``.json`` or ``.yaml``/``.yml`` file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            return cls.from_yaml(text)
        return cls.from_json(text)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (unknown names raise ConfigError)."""
        data = self.to_dict()
        data.update(changes)
        return type(self).from_dict(data)
