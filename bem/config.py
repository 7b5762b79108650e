"""Declarative, validated configuration: YAML in, typed frozen sections out.

A config is a nested mapping ``p`` (the user-facing view, as loaded from YAML). A
:class:`ConfigSchema` describes it: top-level scalars such as ``seed`` and ``method``, and named
sections, each a frozen dataclass whose fields carry their accepted range and help text through
:func:`option`. :meth:`ConfigSchema.parse` checks every key once, fills defaults and returns a
:class:`Config` holding both the resolved plain dict (``config.p``) and the typed sections
(``config.training.batch_size``).

Packages extend a schema by adding sections (:meth:`ConfigSchema.add_section`). A section may be
a nested schema, for instance ``model``, whose ``model_type`` key selects one of its
subsections. Errors are :class:`ConfigError` (a ``ValueError``) with a one-line message naming the
key, the value and what is accepted.

Example::

    @dataclass(frozen=True)
    class TrainingConfig:
        batch_size: int = option(256, ge=1, help="examples per optimizer step")

    schema = ConfigSchema(sections={"training": TrainingConfig})
    config = schema.parse({"training": {"batch_size": 64}})
    config.training.batch_size  # 64
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "ConfigSchema",
    "load_yaml",
    "option",
    "set_by_path",
]


class ConfigError(ValueError):
    """Invalid configuration; the message names the key, the value and what is accepted."""


def option(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Callable[[], typing.Iterable[str]] | None = None,
) -> Any:
    """Declare one config key as a dataclass field with its default, range and help text.

    Args:
        default: value used when the key is absent; lists are stored as tuples.
        help: what the key sets and its unit, shown in errors and ``--help``.
        ge, gt, le, lt: inclusive and exclusive bounds for numbers, and for the items of a
            tuple of numbers.
        choices: callable returning the accepted strings at validation time, for choices
            that a registry fills (use ``Literal`` for a fixed set).
    """
    if isinstance(default, list):
        default = tuple(default)
    metadata = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    return dataclasses.field(default=default, metadata=metadata)


def _describe_range(meta: Mapping[str, Any]) -> str:
    lower = upper = ""
    if meta.get("gt") is not None:
        lower = f"{meta['gt']:g} < "
    elif meta.get("ge") is not None:
        lower = f"{meta['ge']:g} <= "
    if meta.get("lt") is not None:
        upper = f" < {meta['lt']:g}"
    elif meta.get("le") is not None:
        upper = f" <= {meta['le']:g}"
    return f"{lower}value{upper}" if lower or upper else ""


def _check_range(key: str, value: float, meta: Mapping[str, Any]) -> None:
    bounds_ok = not math.isnan(value)
    if meta.get("ge") is not None:
        bounds_ok &= value >= meta["ge"]
    if meta.get("gt") is not None:
        bounds_ok &= value > meta["gt"]
    if meta.get("le") is not None:
        bounds_ok &= value <= meta["le"]
    if meta.get("lt") is not None:
        bounds_ok &= value < meta["lt"]
    if not bounds_ok:
        raise ConfigError(
            f"config key '{key}' = {value!r} is out of range; accepted: {_describe_range(meta)}"
        )


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(c) for c in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _convert(key: str, value: Any, annotation: Any, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against a field annotation and return it in its typed form."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = typing.get_args(annotation)
        if value is None and type(None) in members:
            return None
        non_null = [m for m in members if m is not type(None)]
        errors = []
        for member in non_null:
            try:
                return _convert(key, value, member, meta)
            except ConfigError as error:
                errors.append(error)
        # A single remaining member keeps its precise message (a range error, for instance).
        if len(non_null) == 1:
            raise errors[0]
        raise ConfigError(
            f"config key '{key}' = {value!r} is invalid; expected {_type_name(annotation)}"
        )
    if origin is Literal:
        accepted = typing.get_args(annotation)
        if value not in accepted or isinstance(value, bool) != isinstance(accepted[0], bool):
            raise ConfigError(
                f"config key '{key}' = {value!r} is invalid; accepted: "
                + ", ".join(repr(c) for c in accepted)
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"config key '{key}' = {value!r} has the wrong type; expected a list"
                f" ({_type_name(annotation)})"
            )
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(f"{key}[{i}]", v, item_type, meta) for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(
                f"config key '{key}' = {value!r} has the wrong type; expected true or false"
            )
        return value
    if annotation is int or annotation is float:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if annotation is int and not isinstance(value, int):
            is_number = False
        if not is_number:
            hint = ""
            if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
                # PyYAML follows YAML 1.1, which reads 1e-3 (no dot) as a string.
                number = float(value)
                written = repr(int(number)) if annotation is int and number.is_integer() else None
                written = written or f"{number:.1e}".replace("e-0", "e-").replace("e+0", "e+")
                hint = f"; YAML reads {value} as a string, write {written}"
            elif isinstance(value, str):
                hint = "; remove the quotes around the number" if _is_number(value) else ""
            raise ConfigError(
                f"config key '{key}' = {value!r} has the wrong type; expected"
                f" {annotation.__name__}{hint}"
            )
        value = annotation(value)
        _check_range(key, value, meta)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(
                f"config key '{key}' = {value!r} has the wrong type; expected a string"
            )
        if meta.get("choices") is not None:
            accepted = list(meta["choices"]())
            if value not in accepted:
                raise ConfigError(
                    f"config key '{key}' = {value!r} is invalid; accepted: " + ", ".join(accepted)
                )
        return value
    raise TypeError(f"config field '{key}' has an unsupported annotation {annotation!r}")


# A number in exponent form without a dot, which YAML 1.1 reads as a string: 1e-3, 2E5.
_EXPONENT_NUMBER = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_plain(value: Any) -> Any:
    """Convert tuples to lists recursively, so that the resolved dict matches YAML and JSON."""
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _parse_dataclass(cls: type, values: Any, prefix: str) -> tuple[Any, dict[str, Any]]:
    """Validate ``values`` against the frozen dataclass ``cls``; return (instance, plain dict)."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"config key '{prefix}' = {values!r} has the wrong type; expected a mapping of keys"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}.{unknown[0]}'; accepted keys in '{prefix}': "
            + ", ".join(fields)
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}"
        raw = values[name] if name in values else field.default
        kwargs[name] = _convert(key, raw, hints[name], field.metadata)
    try:
        instance = cls(**kwargs)
    except ValueError as error:
        # __post_init__ checks that span several keys raise ValueError naming them.
        raise ConfigError(f"invalid section '{prefix}': {error}") from None
    return instance, {k: _to_plain(v) for k, v in kwargs.items()}


class ConfigSchema:
    """A config layout: top-level keys (a frozen dataclass) and named sections.

    Args:
        root: frozen dataclass for scalar keys at this level (``seed``, ``method``), or None.
        sections: section name to a frozen dataclass or a nested :class:`ConfigSchema`.
        selector: name of a root key whose value names the one section that must be
            present (``model.model_type: mlp`` requires ``model.mlp``); the other sections
            may be absent.
    """

    def __init__(
        self,
        root: type | None = None,
        sections: Mapping[str, type | ConfigSchema] | None = None,
        selector: str | None = None,
    ) -> None:
        self.root = root
        self.sections: dict[str, type | ConfigSchema] = dict(sections or {})
        self.selector = selector

    def add_section(self, name: str, section: type | ConfigSchema) -> None:
        """Register a section; a package calls this to extend a schema it does not own."""
        if name in self.sections:
            raise ValueError(f"config section '{name}' is already registered")
        root_names = {f.name for f in dataclasses.fields(self.root)} if self.root else set()
        if name in root_names:
            raise ValueError(f"config section '{name}' clashes with a top-level key")
        self.sections[name] = section

    def parse(self, p: Mapping[str, Any], prefix: str = "") -> Config:
        """Validate ``p`` and return the resolved :class:`Config`.

        Raises:
            ConfigError: on an unknown key, a wrong type or a value out of range.
        """
        if not isinstance(p, Mapping):
            where = f"'{prefix}'" if prefix else "the config"
            raise ConfigError(f"{where} must be a mapping of keys, got {type(p).__name__}")
        root_names = [f.name for f in dataclasses.fields(self.root)] if self.root else []
        known = set(root_names) | set(self.sections)
        unknown = sorted(set(p) - known)
        if unknown:
            where = f" in '{prefix}'" if prefix else ""
            raise ConfigError(
                f"unknown config key '{_join(prefix, unknown[0])}'; accepted keys{where}: "
                + ", ".join(root_names + list(self.sections))
            )

        empty = [name for name in self.sections if name in p and p[name] is None]
        if empty:
            raise ConfigError(
                f"config section '{_join(prefix, empty[0])}' is empty (null); list its keys"
                " or remove the line"
            )

        root_instance, plain = None, {}
        if self.root is not None:
            root_values = {k: p[k] for k in root_names if k in p}
            root_instance, plain = _parse_dataclass(self.root, root_values, prefix or "<top>")

        selected = plain.get(self.selector) if self.selector else None
        if self.selector and selected not in self.sections:
            raise ConfigError(
                f"config key '{_join(prefix, self.selector)}' = {selected!r} is invalid;"
                " accepted: " + ", ".join(self.sections)
            )
        typed: dict[str, Any] = {}
        for name, section in self.sections.items():
            if self.selector and name != selected and name not in p:
                continue
            key = _join(prefix, name)
            if isinstance(section, ConfigSchema):
                typed[name] = section.parse(p.get(name) or {}, key)
                plain[name] = typed[name].p
            else:
                typed[name], plain[name] = _parse_dataclass(section, p.get(name), key)
        return Config(plain, root_instance, typed)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Config:
    """A validated config: ``p`` is the resolved plain dict, attributes are typed sections.

    ``config.training`` returns the frozen dataclass of section ``training``, and top-level
    keys are attributes too (``config.seed``). Nested schemas return nested ``Config``s.
    """

    def __init__(self, p: dict[str, Any], root: Any, sections: Mapping[str, Any]) -> None:
        self.p = p
        self._root = root
        self._sections = dict(sections)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._sections:
            return self._sections[name]
        if self._root is not None and hasattr(self._root, name):
            return getattr(self._root, name)
        raise AttributeError(f"config has no key or section '{name}'")

    def has(self, name: str) -> bool:
        """Tell whether a section or top-level key ``name`` is present."""
        return name in self._sections or (self._root is not None and hasattr(self._root, name))

    def to_yaml(self) -> str:
        """Serialise the resolved dict as YAML, in schema order."""
        return yaml.safe_dump(self.p, sort_keys=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises on a key given twice in one mapping."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config with PyYAML's safe loader, which builds only plain types, and reject
    duplicate keys (plain ``yaml.safe_load`` keeps the last one silently).

    Raises:
        ConfigError: if the file is missing, is not valid YAML or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or type(error).__name__
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        # An empty file is almost always a mistake, and its built-in defaults differ from the
        # shipped configs (no evaluation, no EMA), so it is rejected rather than trained.
        raise ConfigError(
            f"config file {path} is empty; start from a config in dlpm/configs/ and change it"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping, got {type(data).__name__}")
    return data


def config_leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Flatten nested dicts to ``{(section, ..., key): value}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    leaves: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        leaves.update(config_leaves(value, prefix + (str(key),)))
    return leaves


def set_by_path(p: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``"training.batch_size"``) in ``p``, creating sections as needed."""
    *parents, leaf = key.split(".")
    node = p
    for name in parents:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"config key '{name}' is not a section, cannot set '{key}'")
        node = child
    node[leaf] = value
