"""Typed runtime options: what a suite's [runtime_options.NAME] table may set, checked once.

Each runtime declares a frozen dataclass of its options (bench.runtimes.base.Runtime.Options)
whose fields carry their kind and limits; the suite parses every table when it loads,
so a bad key or value is one line before any worker starts, and a runtime reads typed
fields instead of dictionary lookups. A field left at None means "the runtime decides"
(e.g. OpenVINO's mode follows the runtime variant).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from bench.errors import UserError

_KIND_TEXT = {int: "a whole number", bool: "true or false", str: "a string"}


class OptionError(UserError, ValueError):
    """A bad runtime option: exit 2 at suite load; a failed point where a runtime is called directly."""


def option(default: Any, kind: type, *, choices: tuple[str, ...] = (), minimum: int | None = None,
           maximum: int | None = None):
    """A dataclass field with what parse() checks: its kind, its choices (strings) or its range (ints)."""
    return field(default=default, metadata={"kind": kind, "choices": choices, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True)
class RuntimeOptions:
    """No options: a runtime that takes none keeps this."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, values: dict[str, Any], runtime: str, where: str = "runtime options"):
        """The typed options, or UserError naming the key and the fix."""
        if not isinstance(values, dict):
            raise OptionError(f"{where} [runtime_options]: '{runtime}' must be a table of options, "
                            f"e.g. [runtime_options.{runtime}]")
        known = {f.name: f for f in fields(cls)}
        place = f"{where} [runtime_options.{runtime}]"
        parsed = {}
        for key, value in values.items():
            if key not in known:
                raise OptionError(f"{place}: unknown option '{key}'; {runtime} takes {', '.join(known) or 'no options'}")
            parsed[key] = _checked(known[key].metadata, key, value, place)
        return cls(**parsed)


def _checked(spec: dict[str, Any], key: str, value: Any, place: str) -> Any:
    kind = spec["kind"]
    # TOML booleans are ints in Python: never accept one where a number is meant.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise OptionError(f"{place}: {key} = {_toml(value)} must be {_KIND_TEXT[kind]}")
    if spec["choices"]:
        by_folded = {choice.casefold(): choice for choice in spec["choices"]}
        if value.casefold() not in by_folded:
            raise OptionError(f"{place}: {key} = {_toml(value)}; use one of {', '.join(spec['choices'])}")
        return by_folded[value.casefold()]
    low, high = spec["minimum"], spec["maximum"]
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{low}..{high}" if high is not None else f"{low} or more"
        raise OptionError(f"{place}: {key} = {_toml(value)} is out of range; use {span}")
    return value


def _toml(value: Any) -> str:
    """A value as the suite spells it (true, "warp", 4)."""
    return json.dumps(value, default=str)
