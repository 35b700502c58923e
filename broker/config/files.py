"""Reading Orthanc's configuration files: JSON with comments, one file or a directory of them."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from broker.config.options import ConfigError

_COMMENT_OR_STRING = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments, leaving string literals untouched (as Orthanc's parser)."""
    return _COMMENT_OR_STRING.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def load_json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(strip_json_comments(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"Cannot read the configuration file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"The configuration file {path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"The configuration file {path} must contain a JSON object")
    return value


def read_options(path: Path) -> dict[str, Any]:
    """The options of a file, or of every ``*.json`` of a directory merged in name order (as Orthanc)."""
    if not path.is_dir():
        return load_json_file(path)
    raw: dict[str, Any] = {}
    for file in sorted(path.glob("*.json")):
        raw.update(load_json_file(file))
    return raw
