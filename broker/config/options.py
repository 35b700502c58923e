"""The one reader of an option, and the one way a bad value is reported.

Every option of the configuration is read by ``option`` (or, for the few with a shape of their own,
reported by ``bad_value``), so every mistake stops start-up with the same sentence::

    Option 'LuaSandbox.LogRateLimit.Burst' has value 0; expected an integer >= 1

A nested option is named by its path from the top of the file: ``Section`` carries that path, so a
reader of a section never spells its parent's name.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: What a JSON value of each Python type is called in a message (the file is JSON, not Python).
_JSON_NAMES: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                                dict: "an object", list: "a list"}


class ConfigError(Exception):
    """A configuration file or option that cannot be used; the message says which and why."""


def bad_value(label: str, value: Any, expected: str) -> ConfigError:
    """The error of every option with a value that cannot be used."""
    return ConfigError(f"Option '{label}' has value {value!r}; expected {expected}")


@dataclass(frozen=True)
class Section:
    """A JSON object of the configuration and its path (``""`` for the top level, ``"Jobs."`` for the
    ``Jobs`` section), so that messages name nested options in full."""

    values: Mapping[str, Any]
    prefix: str = ""

    @property
    def name(self) -> str:
        """The section's own name (``"LuaSandbox.Isolation"``); empty at the top level."""
        return self.prefix.rstrip(".")

    def label(self, name: str) -> str:
        """The name of the option ``name`` of this section in messages (``"Jobs.RetryDelay"``)."""
        return self.prefix + name

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def section(self, name: str) -> Section:
        """The object ``name`` (absent: empty), as a ``Section`` whose options are named ``<name>.X``."""
        return Section(self.option(name, dict, {}), f"{self.label(name)}.")

    def option(self, name: str, kind: type[T], default: T, check: Callable[[Any], bool] | None = None,
               rule: str = "") -> T:
        """The option ``name``, of JSON type ``kind`` (an int is a valid float, a bool is not an int) and
        passing ``check``; ``rule`` says in the message what ``check`` wants (``">= 1"``)."""
        written = self.values.get(name, default)
        value = float(written) if kind is float and type(written) is int else written
        if (not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool))
                or (check is not None and not check(value))):
            raise bad_value(self.label(name), written, f"{_JSON_NAMES[kind]} {rule}".rstrip())
        return value
