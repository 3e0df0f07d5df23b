"""Typed configs: dataclass defaults <- YAML file <- command-line ``key=value`` overrides.

A config is a ``@dataclass`` (sections are nested dataclasses) whose defaults match the paper.
A YAML file overrides some of its keys, then command-line overrides (``trainer.lr=3e-4``,
``model.lcpa_rounds=2``) override the YAML. Every value is checked against the field's type, and
any mistake is a :class:`~groundkit.errors.ConfigError` naming the source, the full dotted key and
what was expected::

    configs/ppmn.yaml: key 'trainer.lrr': unknown key; did you mean 'trainer.lr'?
    override 'trainer.lr=fast': key 'trainer.lr': expected a number, got 'fast' (str)

Supported field types: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``pathlib.Path``,
``Optional[X]`` / ``X | None``, other unions (first type that fits wins), ``Literal[...]``,
``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``, nested dataclasses and ``Any``.
Experiment YAMLs are found by path or, for those shipped in ``groundkit/configs/``, by bare
name (:func:`resolve_config`: ``ppmn_png`` is ``groundkit/configs/ppmn_png.yaml``).
This module does not import torch.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from groundkit.errors import ConfigError

T = TypeVar("T")

_NONE = type(None)


# ----------------------------------------------------------------------------- public API


def load_config(cls: type[T], yaml_path: str | Path | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, then the YAML file, then each ``key=value`` override.

    Args:
        cls: a dataclass type; every field needs a default unless the YAML provides it.
        yaml_path: a YAML mapping of (possibly nested) keys to values; None for defaults only.
        overrides: strings ``dotted.key=value``; the value is parsed as YAML (``3``, ``1e-4``,
            ``true``, ``null``, ``[10, 12]``, ``adamw``).
    Raises:
        ConfigError: unknown key, wrong type, malformed override, unreadable YAML.
    """
    cfg = cls() if yaml_path is None else config_from_dict(cls, read_yaml(yaml_path), str(yaml_path))
    return override_config(cfg, overrides)


# The experiment YAMLs shipped inside the package (``configs/`` in a checkout links here).
SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the experiment configs shipped with the package (``ppmn_png``, ...)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """The YAML file of ``--config``: a path to a file, or the bare name of a shipped config
    (``ppmn_png`` or ``ppmn_png.yaml``). A path that exists wins over a shipped name.

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    shipped = SHIPPED_CONFIGS / f"{stem}.yaml"
    bare = "/" not in text and "\\" not in text   # a name, not a path
    if bare and shipped.is_file():
        return shipped
    names = shipped_configs()
    if path.is_dir():
        raise ConfigError(f"config {text!r} is a folder; expected a YAML file or the name of a "
                          f"shipped config ({', '.join(names)})")
    if shipped.is_file():  # a path like configs/ppmn_png.yaml run outside a checkout
        hint = f"; the shipped {stem!r} is `--config {stem}`"
    else:
        close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
        hint = "; did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
    raise ConfigError(f"no config {text!r}: not a file, and not the name of a config shipped "
                      f"with groundkit{hint} (shipped: {', '.join(names) or 'none'})")


def override_config(cfg: T, overrides: Sequence[str]) -> T:
    """A copy of the dataclass ``cfg`` with each ``dotted.key=value`` of ``overrides`` applied."""
    for text in overrides:
        key, value = parse_override(text)
        cfg = update_config(cfg, _nest(key, value), source=f"override '{text}'")
    return cfg


def config_from_dict(cls: type[T], d: Mapping[str, Any], source: str = "<dict>") -> T:
    """Build ``cls`` from a nested mapping; missing keys keep their defaults.

    ``source`` names where ``d`` came from (a file path) in error messages.
    """
    return _build(cls, d, None, "", source)


def update_config(cfg: T, d: Mapping[str, Any], source: str = "<dict>") -> T:
    """Return a copy of the dataclass ``cfg`` with the keys of the nested mapping ``d`` replaced."""
    return _build(type(cfg), d, cfg, "", source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready nested dict of a dataclass config (tuples -> lists, paths -> strings).

    ``config_from_dict(type(cfg), config_to_dict(cfg)) == cfg`` holds for the supported types.
    """
    return _jsonable(dataclasses.asdict(cfg))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file is ``{}``)."""
    import yaml  # here, not at the top: ``groundkit --help`` lists the configs without it

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, "
                          f"got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into ``("a.b", parsed value)``; the value is parsed as YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(p.isidentifier() for p in parts):
        raise ConfigError(f"override '{text}': expected 'key=value' with a dotted key of "
                          "identifiers, e.g. 'trainer.lr=3e-4'")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': key '{key}': value is not valid YAML: {e}") from None


def peek_value(yaml_path: str | Path | None, overrides: Sequence[str], key: str,
               default: Any = None) -> Any:
    """The raw value of dotted ``key`` after YAML and overrides, before any type check.

    Lets a command choose the config class from a selector key first (e.g. ``model_type``).
    """
    value = _lookup(read_yaml(yaml_path) if yaml_path is not None else {}, key, default)
    for text in overrides:
        k, v = parse_override(text)
        if k == key:
            value = v
    return value


# ----------------------------------------------------------------------------- building


def _build(cls: type, d: Any, base: Any, prefix: str, source: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``d``, on top of instance ``base`` if given."""
    if not isinstance(d, Mapping):
        raise _type_error(source, prefix, f"a mapping of {cls.__name__} keys", d)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, raw in d.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: key '{dotted}': unknown key; "
                              f"{_suggest(str(key), prefix, cls)}")
        current = getattr(base, key) if base is not None else None
        values[key] = _convert(raw, hints[key], current, dotted, source)
    for key, value in values.items():
        check_size_bound(f"{prefix}{key}", value, source)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as e:  # a missing required key or a __post_init__ check
        where = f"section '{prefix[:-1]}'" if prefix else cls.__name__
        raise ConfigError(f"{source}: {where}: {e}") from None


# Upper bounds of the integer keys that size tensors (by the key's last name), so that a typo or
# a corrupt checkpoint header (hidden_dim=10**6) is a ConfigError, not an allocation that runs the
# machine out of memory. Generous: every published configuration is far below them.
SIZE_LIMITS: tuple[tuple[str, int], ...] = (
    ("input_size", 4096), ("short_side", 8192), ("max_size", 8192),
    ("mask_size", 1024), ("roi_size", 1024),
    ("dim", 16384), ("*_dim", 16384), ("*_channels", 16384), ("base_width", 16384),
    ("layers", 128), ("*_layers", 128), ("*_convs", 128), ("rounds", 128), ("refine_rounds", 128),
    ("*_levels", 128), ("heads", 256), ("points", 256), ("max_queries", 4096),
    ("num_classes", 100000), ("semantic_classes", 100000),
)


def size_limit(key: str) -> int | None:
    """The upper bound of the dotted config ``key`` if its value sizes tensors, else None."""
    name = key.rsplit(".", 1)[-1]
    for pattern, limit in SIZE_LIMITS:
        if name == pattern or (pattern.startswith("*") and name.endswith(pattern[1:])):
            return limit
    return None


def check_size_bound(key: str, value: Any, source: str = "<config>") -> None:
    """Raise a ConfigError naming ``key``, ``value`` and the limit if ``value`` (an int that sizes
    tensors: a width, a layer or head count, an input size) is negative or over its limit.

    Every config built by :func:`load_config`, :func:`config_from_dict` (checkpoint headers
    included) and :func:`override_config` passes through it."""
    limit = size_limit(key)
    if limit is None or isinstance(value, bool) or not isinstance(value, int):
        return
    if not 0 <= value <= limit:
        raise ConfigError(f"{source}: key '{key}': {value} is out of range: it sizes tensors and "
                          f"must be between 0 and {limit}")


def _convert(value: Any, tp: Any, current: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp`` and return it in that type (list -> tuple, ...)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        base = current if dataclasses.is_dataclass(current) else None
        return _build(tp, value, base, f"{key}.", source)
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, args, key, source)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _type_error(source, key, _describe(tp), value)
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_sequence(value, tp, key, source)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _type_error(source, key, _describe(tp), value)
        vt = args[1] if args else Any
        return {k: _convert(v, vt, None, f"{key}.{k}", source) for k, v in value.items()}
    return _convert_scalar(value, tp, key, source)


def _convert_union(value: Any, tp: Any, args: tuple, key: str, source: str) -> Any:
    if value is None and _NONE in args:
        return None
    for arg in args:
        if arg is _NONE:
            continue
        try:
            return _convert(value, arg, None, key, source)
        except ConfigError:
            continue
    raise _type_error(source, key, _describe(tp), value)


def _convert_sequence(value: Any, tp: Any, key: str, source: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _type_error(source, key, _describe(tp), value)
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _type_error(source, key, _describe(tp), value)
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [_convert(v, t, None, f"{key}[{i}]", source)
             for i, (v, t) in enumerate(zip(value, item_types))]
    return tuple(items) if origin is tuple else items


def _convert_scalar(value: Any, tp: Any, key: str, source: str) -> Any:
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept what Python reads as a number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(source, key, _describe(tp), value)


# ----------------------------------------------------------------------------- messages


def _type_error(source: str, key: str, expected: str, value: Any) -> ConfigError:
    key = key.rstrip(".")
    where = f"key '{key}'" if key else "top level"
    hint = " (quote it to pass a string)" if expected == "a string" and value is not None else ""
    return ConfigError(f"{source}: {where}: expected {expected}, "
                       f"got {value!r} ({type(value).__name__}){hint}")


def _describe(tp: Any) -> str:
    """Human wording of a type for error messages: ``list[int]`` -> 'a list of integers'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        names = [_describe(a) for a in args if a is not _NONE]
        return " or ".join(names + (["null"] if _NONE in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple) or tp in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} items ({', '.join(_describe(a) for a in args)})"
        return f"a list of {_plural(_describe(args[0]))}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} keys"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             Path: "a path (string)"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(description: str) -> str:
    words = description.split(" ", 1)
    return words[-1] + "s" if words[0] in ("a", "an") else description


def _suggest(key: str, prefix: str, cls: type) -> str:
    """Close names in this section, or the same name in a subsection (``lr`` -> ``trainer.lr``)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    close = [prefix + c for c in difflib.get_close_matches(key, names, n=3, cutoff=0.6)]
    close += [p for p in _leaf_paths(cls, prefix) if p.endswith("." + key)]
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "valid keys here: " + ", ".join(f"'{prefix}{n}'" for n in names)


def _leaf_paths(cls: type, prefix: str) -> list[str]:
    """Dotted names of every key below the dataclass ``cls`` (sections recursed into)."""
    hints, paths = typing.get_type_hints(cls), []
    for name in (f.name for f in dataclasses.fields(cls) if f.init):
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            paths += _leaf_paths(tp, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


# ----------------------------------------------------------------------------- helpers


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    """``("a.b.c", 1)`` -> ``{"a": {"b": {"c": 1}}}``."""
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _lookup(d: Mapping[str, Any], dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return default
        d = d[part]
    return d


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    json.dumps(obj)  # fail here, naming the value, rather than later when a file is half written
    return obj
