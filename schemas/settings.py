"""Typed run settings: the config's ``model``, ``train`` and ``evaluate`` sections.

The settings themselves are dataclasses of the layer that uses them (``model.network.
ModelConfig``, ``model.train.TrainConfig``, ``evaluation.settings.EvalConfig``), so their
defaults live in one place. A config may set any of their fields, and ``--set`` may override
one (``--set train.steps=300``)::

    train:
      steps: 300
      schedule: {max_lr: 0.002}
    evaluate:
      repeats: 2

:func:`read_settings` builds the dataclass from such a section over its defaults, checking
every value against the field's type and naming a wrong one by its dotted path
(``train.steps: expected an integer, got 'many'``). A command's own flags (``metaprofile
train --steps 300``) are aliases that override the section.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from schemas.config_model import ConfigError

SETTINGS_SECTIONS = ("model", "train", "evaluate")


def given_flags(args, names: tuple[str, ...]) -> dict[str, Any]:
    """The options among ``names`` that were given on the command line (``argparse``
    namespace; an alias flag defaults to None), by field name."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def read_settings(cls, values: Mapping[str, Any] | None, section: str, *, base=None,
                  fixed: tuple[str, ...] = (), source: str = "<config>"):
    """An instance of dataclass ``cls``: ``base`` (default: ``cls()``) with ``values`` set.

    ``fixed`` names fields that a config may not set (paths the command derives itself).
    Raises :class:`ConfigError` for ``source`` (the config file) listing every problem, each
    with its dotted path.
    """
    problems: list[str] = []
    result = _read(cls, values or {}, section, base, fixed, problems)
    if problems:
        raise ConfigError(source, problems)
    return result


def _read(cls, values, path: str, base, fixed, problems: list[str]):
    if not isinstance(values, Mapping):
        problems.append(f"{path}: expected a mapping of settings, got {values!r}")
        return base
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    changes = {}
    for key, value in values.items():
        where = f"{path}.{key}"
        if key not in fields or key in fixed:
            allowed = sorted(n for n in fields if n not in fixed)
            problems.append(f"{where}: unknown setting; allowed: {', '.join(allowed)}")
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            current = getattr(base, key) if base is not None else hint()
            changes[key] = _read(hint, value, where, current, (), problems)
            continue
        ok, converted = _convert(value, hint)
        if not ok:
            problems.append(f"{where}: expected {_describe(hint)}, got {value!r}")
        else:
            changes[key] = converted
    if problems:
        return base
    try:
        return dataclasses.replace(base, **changes) if base is not None else cls(**changes)
    except (TypeError, ValueError) as exc:  # the dataclass's own checks
        problems.append(f"{path}: {exc}")
        return base


def _convert(value: Any, hint) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for option in args:
            if option is not type(None):
                ok, converted = _convert(value, option)
                if ok:
                    return True, converted
        return False, None
    if origin is tuple:
        if isinstance(value, str):  # --set train.x=a,b and flags give comma lists
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        out = []
        for v in value:
            ok, converted = _convert(v, item)
            if not ok:
                return False, None
            out.append(converted)
        return True, tuple(out)
    if hint is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if hint is int:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int):
            return True, value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return True, int(value)
        return False, None
    if hint is float:
        if isinstance(value, bool):
            return False, None
        try:
            return True, float(value)
        except (TypeError, ValueError):
            return False, None
    if hint is str:
        return (True, value) if isinstance(value, str) else (False, None)
    return True, value  # Any and other annotations: taken as given


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        plural = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}"
    return {bool: "true or false", int: "an integer", float: "a number",
            str: "a string"}.get(hint, str(hint))
